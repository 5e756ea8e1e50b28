"""The LETTER / LC-Rec folder format (e.g. Amazon 2018 Industrial_and_Scientific).

Files, found by glob (exactly one of each):
  <Name>.inter.json   {user_id: [item_id, ...]}, 0-based item ids, oldest first.
  <Name>.item.json    {item_id: {"title", "description", "brand", "categories"}}, categories a
                      comma-joined path; item ids must be exactly "0" .. "N-1".

Internal item index = LETTER item id; internal user index = order of the users in the file.
These JSON files have no useful line numbers, so errors name the user or item key instead.
The format has no attributes (empty tuples) and no prices (bids are simulated).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from sgrec_jax.data.bids import simulate_bids
from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset, validate_sequences
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.formats import (
    clean_text,
    format_categories,
    parse_int,
    provenance,
    read_object,
    require_dir,
)


def find_one(directory: pathlib.Path, pattern: str) -> pathlib.Path:
    """The single file in `directory` matching `pattern`."""
    matches = sorted(p for p in directory.glob(pattern) if p.is_file())
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "none"
        raise DataFormatError(
            directory, f"expected exactly one {pattern} file, found {len(matches)}: {found}"
        )
    return matches[0]


def _read_items(path: pathlib.Path) -> dict[str, tuple[str, ...]]:
    records = read_object(path)
    if not records:
        raise DataFormatError(path, "empty catalog: no items")
    n = len(records)
    indices = {parse_int(key, path, None, "item id"): key for key in records}
    missing = sorted(set(range(n)) - indices.keys())
    if missing:
        raise DataFormatError(path, f"item ids must be 0..{n - 1}; item {missing[0]} is missing")
    text = {f: [""] * n for f in TEXT_FIELDS}
    for index, key in indices.items():
        record = records[key]
        if not isinstance(record, dict):
            raise DataFormatError(path, f"item {key!r}: expected an object of text fields")
        for field in TEXT_FIELDS:
            parse = format_categories if field == "categories" else clean_text
            try:
                text[field][index] = parse(record.get(field))
            except ValueError as e:
                raise DataFormatError(path, f"item {key!r}: field {field!r}: {e}") from None
    return {f: tuple(v) for f, v in text.items()}


def _read_sequences(
    path: pathlib.Path, num_items: int, min_seq_len: int
) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    records = read_object(path)
    sequences = []
    for user, items in records.items():
        if not isinstance(items, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in items
        ):
            raise DataFormatError(path, f"user {user!r}: expected a list of integer item ids")
        seq = np.asarray(items, dtype=np.int64)
        bad = (seq < 0) | (seq >= num_items)
        if bad.any():
            raise DataFormatError(
                path,
                f"user {user!r}: unknown item id {int(seq[bad.argmax()])}, "
                f"catalog has 0..{num_items - 1}",
            )
        if len(seq) < min_seq_len:
            raise DataFormatError(
                path,
                f"user {user!r}: sequence too short: {len(seq)} items, "
                f"leave-one-out needs >= {min_seq_len}",
            )
        sequences.append(seq.astype(np.int32))
    validate_sequences(sequences, num_items, path=path, min_length=min_seq_len)
    return tuple(records), tuple(sequences)


def load_letter(
    directory: str | os.PathLike,
    name: str | None = None,
    bid_seed: int = 0,
    min_seq_len: int = 3,
) -> SeqRecDataset:
    """Loads a LETTER folder (see module docstring); bids are simulated with `bid_seed`.

    `name` defaults to the folder's name. Item ids are the LETTER ids as strings.
    """
    directory = require_dir(directory)
    inter_path = find_one(directory, "*.inter.json")
    item_path = find_one(directory, "*.item.json")
    text = _read_items(item_path)
    num_items = len(text["title"])
    user_ids, sequences = _read_sequences(inter_path, num_items, min_seq_len)
    bids, bid_source = simulate_bids(num_items, bid_seed)
    items = Items(
        ids=tuple(str(i) for i in range(num_items)),
        text=text,
        attributes=((),) * num_items,
        bids=bids,
        bid_source=bid_source,
    )
    return SeqRecDataset(
        name=name or directory.name,
        items=items,
        user_ids=user_ids,
        sequences=sequences,
        source_files=provenance([inter_path, item_path]),
    )
