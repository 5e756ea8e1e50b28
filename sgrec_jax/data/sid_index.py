"""Ready-made semantic-ID indexes in the LETTER format, as int32 codes aligned to items.

A LETTER index is `{item_key: ["<a_183>", "<b_70>", "<c_232>", "<d_6>"]}`: token i has the
level letter chr(ord("a") + i) and the code after the underscore. The key is the LETTER item id,
which is our internal item index for both public datasets (Beauty: P5 id - 1; Scientific: the
LETTER id itself). Collisions (two items with one code tuple) are kept as they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.formats import parse_int, read_object

_TOKEN = re.compile(r"<([a-z])_(\d+)>")


class SidIndex(NamedTuple):
    """codes: int32 [N, L] (item x level); codebook_sizes: codes per level, length L."""

    codes: np.ndarray
    codebook_sizes: tuple[int, ...]


def load_sid_index(
    path: str | os.PathLike,
    num_items: int,
    codebook_sizes: int | Sequence[int] | None = None,
) -> SidIndex:
    """Loads and validates a LETTER SID index for items 0 .. num_items-1.

    codebook_sizes: codes per level (one int for all levels); codes must be below it. When
      None, each level's size is its largest code + 1.
    Errors name the file and the item key: non-integer, missing or extra keys, tokens that are
    not `<x_k>`, levels out of order, tuples of different lengths, codes out of range.
    """
    records = read_object(path)
    codes: list[list[int] | None] = [None] * num_items
    num_levels = None
    for key, tokens in records.items():
        index = parse_int(key, path, None, "item key")
        if not 0 <= index < num_items:
            raise DataFormatError(path, f"extra key {key!r}: items are 0..{num_items - 1}")
        if not isinstance(tokens, list) or not tokens:
            raise DataFormatError(path, f"item {key!r}: expected a non-empty list of tokens")
        row = []
        for level, token in enumerate(tokens):
            match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
            if match is None:
                raise DataFormatError(path, f"item {key!r}: token {token!r} is not <x_k>")
            expected = chr(ord("a") + level)
            if match[1] != expected:
                raise DataFormatError(
                    path, f"item {key!r}: token {token!r} at level {level} must be <{expected}_k>"
                )
            row.append(int(match[2]))
        if num_levels is None:
            num_levels = len(row)
        elif len(row) != num_levels:
            raise DataFormatError(
                path, f"item {key!r}: {len(row)} levels, other items have {num_levels}"
            )
        codes[index] = row
    missing = [i for i, row in enumerate(codes) if row is None]
    if missing:
        raise DataFormatError(
            path, f"{len(missing)} items have no SID, first missing key {str(missing[0])!r}"
        )
    codes_nl = np.asarray(codes, dtype=np.int64).reshape(num_items, num_levels or 0)
    if codebook_sizes is None:
        sizes = tuple(int(s) + 1 for s in codes_nl.max(axis=0))
    else:
        if isinstance(codebook_sizes, int):
            codebook_sizes = [codebook_sizes] * codes_nl.shape[1]
        sizes = tuple(int(s) for s in codebook_sizes)
        if len(sizes) != codes_nl.shape[1]:
            raise ValueError(f"{len(sizes)} codebook sizes for {codes_nl.shape[1]} levels")
        too_big = codes_nl >= np.asarray(sizes)
        if too_big.any():
            item, level = np.argwhere(too_big)[0]
            raise DataFormatError(
                path,
                f"item {str(item)!r}: code {codes_nl[item, level]} at level {level} is out of "
                f"range for codebook size {sizes[level]}",
            )
    return SidIndex(codes=codes_nl.astype(np.int32), codebook_sizes=sizes)
