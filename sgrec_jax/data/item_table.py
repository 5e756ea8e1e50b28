"""The item side information (`dataset.Items`) as flat arrays: the "items" table of a shard
directory, from which a run over shards rebuilds the very `Items` its dataset had.

Arrays (N items):
  ids               str [N] external ids
  bids              float32 [N]
  text_fields       str [F] the text fields the dataset has (a subset of TEXT_FIELDS)
  text_<field>      uint8 [bytes] every item's UTF-8 text of that field, concatenated
  text_<field>_ends int64 [N] where each item's text ends in it
  attributes        int64 [A] every item's attribute ids, concatenated
  attributes_ends   int64 [N]

Variable-length values are concatenated with end offsets, not stored as fixed-width numpy
strings: one long description would otherwise widen every item's slot to its length (a catalog
of 10^5 items with one 10^4-character description would take 4 GB). bid_source is not an array;
it lives in the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sgrec_jax.data.dataset import TEXT_FIELDS, Items
from sgrec_jax.data.errors import DataFormatError


def _ragged(values: Sequence[np.ndarray], dtype) -> tuple[np.ndarray, np.ndarray]:
    """(the values concatenated, the end offset of each)."""
    ends = np.cumsum([len(v) for v in values], dtype=np.int64)
    flat = np.concatenate(values).astype(dtype) if values else np.zeros(0, dtype)
    return flat, ends


def _split(flat: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, ends[:-1]) if len(ends) else []


def encode_items(items: Items) -> dict[str, np.ndarray]:
    """The arrays of the "items" table (module docstring)."""
    table = {"ids": np.asarray(items.ids, dtype=np.str_),
             "bids": np.asarray(items.bids, dtype=np.float32),
             "text_fields": np.asarray(list(items.text), dtype=np.str_)}
    for field, values in items.text.items():
        encoded = [np.frombuffer(v.encode("utf-8"), np.uint8) for v in values]
        table[f"text_{field}"], table[f"text_{field}_ends"] = _ragged(encoded, np.uint8)
    table["attributes"], table["attributes_ends"] = _ragged(
        [np.asarray(a, np.int64) for a in items.attributes], np.int64)
    return table


def decode_items(table: Mapping[str, np.ndarray], bid_source: str, path) -> Items:
    """The `Items` of an "items" table read from `path` (named by any DataFormatError)."""
    needed = {"ids", "bids", "text_fields", "attributes", "attributes_ends"}
    missing = sorted(needed - set(table))
    if missing:
        raise DataFormatError(path, f"item table lacks {missing}")
    n = len(table["ids"])
    fields = [str(f) for f in table["text_fields"]]
    if not set(fields) <= set(TEXT_FIELDS):
        raise DataFormatError(path, f"unknown text fields {sorted(set(fields) - set(TEXT_FIELDS))}")

    def ragged(name: str) -> list[np.ndarray]:
        if f"{name}_ends" not in table or name not in table:
            raise DataFormatError(path, f"item table lacks {name!r} or {name + '_ends'!r}")
        ends = table[f"{name}_ends"]
        if len(ends) != n or (n and (ends[-1] != len(table[name]) or (np.diff(ends) < 0).any())):
            raise DataFormatError(path, f"{name}_ends does not index {name} for {n} items")
        return _split(table[name], ends)

    try:
        text = {f: tuple(b.tobytes().decode("utf-8") for b in ragged(f"text_{f}")) for f in fields}
    except UnicodeDecodeError as error:
        raise DataFormatError(path, f"item text is not UTF-8: {error}") from error
    try:
        return Items(ids=tuple(str(i) for i in table["ids"]), text=text,
                     attributes=tuple(tuple(int(a) for a in row)
                                      for row in ragged("attributes")),
                     bids=np.asarray(table["bids"], np.float32), bid_source=bid_source)
    except ValueError as error:  # Items' own shape checks
        raise DataFormatError(path, str(error)) from error
