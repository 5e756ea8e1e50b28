"""The dedup level: one extra SID column that makes SID <-> item a bijection.

Quantizers map distinct items to the same code tuple now and then (LETTER's Beauty index has 13
such surplus items). TIGER's fix, used here: append a level that numbers the items sharing a
tuple 0, 1, 2, ... in item order; an item whose tuple is unique gets 0. The dedup level's
vocabulary is the largest group size (at least 1).
"""

from __future__ import annotations

import numpy as np


def check_codes(codes_nl: np.ndarray) -> np.ndarray:
    """`codes_nl` as int32 [N, L] with N, L >= 1 and no negative code, or a ValueError."""
    codes_nl = np.asarray(codes_nl)
    if codes_nl.ndim != 2 or 0 in codes_nl.shape:
        raise ValueError(f"SID codes must be a non-empty [N, L] array, got shape {codes_nl.shape}")
    if not np.issubdtype(codes_nl.dtype, np.integer):
        raise ValueError(f"SID codes must be integers, got {codes_nl.dtype}")
    if codes_nl.min() < 0:
        item, level = np.argwhere(codes_nl < 0)[0]
        code = codes_nl[item, level]
        raise ValueError(f"SID codes must be >= 0; item {item} level {level} is {code}")
    if codes_nl.max() > np.iinfo(np.int32).max:
        raise ValueError(f"SID code {codes_nl.max()} does not fit int32")
    return codes_nl.astype(np.int32, copy=False)


def lexicographic_order(codes_nl: np.ndarray) -> np.ndarray:
    """Stable argsort of the rows by code tuple, level 0 most significant: int64 [N].

    Packs each row into one int64 when the levels' bit widths fit in 63 bits (several times
    faster than np.lexsort at 10M rows), else falls back to np.lexsort.
    """
    codes_nl = check_codes(codes_nl)
    bits = [int(top).bit_length() for top in codes_nl.max(0)]
    if sum(bits) > 63:
        return np.lexsort(codes_nl.T[::-1])
    key_n = np.zeros(len(codes_nl), np.int64)
    for level, width in enumerate(bits):
        key_n = (key_n << width) | codes_nl[:, level]
    return np.argsort(key_n, kind="stable")


def group_sizes(codes_nl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item, (size of its code-tuple group [N], rank within the group in item order [N])."""
    codes_nl = check_codes(codes_nl)
    n = codes_nl.shape[0]
    # A stable order keeps the items of one group in item order.
    order = lexicographic_order(codes_nl)
    sorted_nl = codes_nl[order]
    starts = np.flatnonzero(np.r_[True, np.any(sorted_nl[1:] != sorted_nl[:-1], axis=1)])
    lengths = np.diff(np.r_[starts, n])
    group_of_sorted = np.repeat(np.arange(len(starts)), lengths)
    size_n = np.empty(n, np.int64)
    rank_n = np.empty(n, np.int64)
    size_n[order] = lengths[group_of_sorted]
    rank_n[order] = np.arange(n) - starts[group_of_sorted]
    return size_n, rank_n


def append_dedup_level(codes_nl: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes int32 [N, L+1] with the dedup level last, and the dedup level's size."""
    size_n, rank_n = group_sizes(codes_nl)
    codes = np.concatenate([check_codes(codes_nl), rank_n[:, None].astype(np.int32)], axis=1)
    return codes, int(size_n.max())
