"""SID quality figures: collisions before dedup and codebook usage per level.

A good quantizer uses its codebooks evenly (usage near 1, perplexity near the codebook size) and
rarely maps two items to one tuple; both are reported by every SID build.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sgrec_jax.sid.dedup import check_codes, group_sizes


def collision_stats(codes_nl: np.ndarray) -> dict[str, float]:
    """Collisions of full code tuples.

    Keys: collision_rate (fraction of items whose tuple some other item shares),
    num_distinct_sids, max_group_size (most items on one tuple), surplus_items (items beyond
    the first on each tuple, i.e. N - num_distinct_sids).
    """
    size_n, rank_n = group_sizes(codes_nl)
    n = len(size_n)
    distinct = int(np.sum(rank_n == 0))
    return {
        "collision_rate": float(np.mean(size_n > 1)),
        "num_distinct_sids": distinct,
        "max_group_size": int(size_n.max()),
        "surplus_items": n - distinct,
    }


def codebook_usage(codes_nl: np.ndarray, codebook_size: int | Sequence[int]) -> dict[str, float]:
    """Per level l: usage_l{l} (distinct codes used / codebook size) and perplexity_l{l}.

    Perplexity is exp(entropy) of the level's code distribution over items: the number of
    equally used codes that would give the same entropy.
    """
    codes_nl = check_codes(codes_nl)
    levels = codes_nl.shape[1]
    sizes = [codebook_size] * levels if isinstance(codebook_size, int) else list(codebook_size)
    if len(sizes) != levels:
        raise ValueError(f"{len(sizes)} codebook sizes for {levels} levels")
    out = {}
    for level, size in enumerate(sizes):
        if codes_nl[:, level].max() >= size:
            raise ValueError(f"level {level} has code {codes_nl[:, level].max()} >= size {size}")
        p = np.bincount(codes_nl[:, level], minlength=size) / len(codes_nl)
        nz = p[p > 0]
        out[f"usage_l{level}"] = float(len(nz) / size)
        out[f"perplexity_l{level}"] = float(np.exp(-np.sum(nz * np.log(nz))))
    return out


def sid_metrics(codes_nl: np.ndarray, codebook_size: int | Sequence[int]) -> dict[str, float]:
    """collision_stats and codebook_usage in one flat dict, ready for logging."""
    return {**collision_stats(codes_nl), **codebook_usage(codes_nl, codebook_size)}
