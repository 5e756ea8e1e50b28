"""The P5 / S3-Rec folder format (e.g. Amazon 2014 Beauty as used by P5, TIGER and LETTER).

Files (`load_p5` reads them, `write_p5` writes them):
  sequential_data.txt    one line per user, `user_id item_id item_id ...`, 1-based ids, oldest
                         first; LF or CRLF.
  datamaps.json          {"id2user": {"1": reviewerID, ...}, "id2item": {"1": ASIN, ...}}.
  item2attributes.json   optional, {item_id: [attribute_id, ...]} (S3-Rec's anonymous ids).
  item_meta.jsonl        optional, one object per item: p5_item_id, asin, title, categories (a
                         list of category paths, or a ready string), brand, description.
  item_textual_ids.txt   optional, `ASIN short text`; IDGenRec's noisy title proxy, used as the
                         title only when item_meta.jsonl is absent.

Internal item index = P5 item id - 1; internal user index = line order. Every text field of
TEXT_FIELDS is present in `Items.text` ("" where the source has nothing).
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from sgrec_jax.core.files import atomic_write
from sgrec_jax.data.bids import simulate_bids
from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset, validate_sequences
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.formats import (
    clean_text,
    format_categories,
    iter_lines,
    parse_int,
    parse_json,
    provenance,
    read_object,
    require_dir,
    require_file,
)

SEQUENCES = "sequential_data.txt"
DATAMAPS = "datamaps.json"
ATTRIBUTES = "item2attributes.json"
ITEM_META = "item_meta.jsonl"
TEXTUAL_IDS = "item_textual_ids.txt"


def _id_map(datamaps: dict, key: str, path: pathlib.Path) -> dict[int, str]:
    """datamaps[key] as int id -> external id string."""
    mapping = datamaps.get(key)
    if not isinstance(mapping, dict):
        raise DataFormatError(path, f"missing the {key!r} object")
    out = {}
    for raw_id, external in mapping.items():
        if not isinstance(external, str) or not external:
            raise DataFormatError(path, f"{key}[{raw_id!r}] must be a non-empty string")
        out[parse_int(raw_id, path, None, f"{key} key")] = external
    return out


def _item_ids(datamaps: dict, path: pathlib.Path) -> tuple[str, ...]:
    """ASINs by internal index, after checking id2item covers exactly 1..N once per ASIN."""
    id2item = _id_map(datamaps, "id2item", path)
    if not id2item:
        raise DataFormatError(path, "empty catalog: id2item has no items")
    n = len(id2item)
    missing = sorted(set(range(1, n + 1)) - id2item.keys())
    if missing:
        raise DataFormatError(path, f"id2item must hold ids 1..{n}; id {missing[0]} is missing")
    asins = tuple(id2item[i] for i in range(1, n + 1))
    if len(set(asins)) != n:
        dup = next(a for a in asins if asins.count(a) > 1)
        raise DataFormatError(path, f"id2item maps two ids to the same item {dup!r}")
    return asins


def _read_sequences(
    path: pathlib.Path, num_items: int, id2user: dict[int, str], min_seq_len: int
) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    users: list[str] = []
    sequences: list[np.ndarray] = []
    lines: list[int] = []
    first_line: dict[int, int] = {}
    for number, line in iter_lines(path):
        tokens = line.split()
        if not tokens:
            continue
        user = parse_int(tokens[0], path, number, "user id")
        if user in first_line:
            raise DataFormatError(
                path, f"duplicated user {user} (first on line {first_line[user]})", number
            )
        first_line[user] = number
        if user not in id2user:
            raise DataFormatError(path, f"unknown user id {user}: not in {DATAMAPS}", number)
        items = np.array([parse_int(t, path, number, "item id") for t in tokens[1:]], np.int64)
        bad = (items < 1) | (items > num_items)
        if bad.any():
            raise DataFormatError(
                path,
                f"unknown item id {int(items[bad.argmax()])}: {DATAMAPS} has items 1..{num_items}",
                number,
            )
        users.append(id2user[user])
        sequences.append((items - 1).astype(np.int32))
        lines.append(number)
    validate_sequences(sequences, num_items, path=path, lines=lines, min_length=min_seq_len)
    return tuple(users), tuple(sequences)


def _item_index(raw_id: object, path: pathlib.Path, line: int | None, num_items: int) -> int:
    """Internal index of a 1-based P5 item id given as an int or a digit string."""
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str):
        raise DataFormatError(path, f"item id {raw_id!r} is not an integer", line)
    item = parse_int(raw_id, path, line, "item id") if isinstance(raw_id, str) else raw_id
    if not 1 <= item <= num_items:
        raise DataFormatError(path, f"unknown item id {item}: catalog has 1..{num_items}", line)
    return item - 1


def _read_attributes(path: pathlib.Path, num_items: int) -> tuple[tuple[int, ...], ...]:
    attributes: list[tuple[int, ...]] = [()] * num_items
    for raw_id, values in read_object(path).items():
        index = _item_index(raw_id, path, None, num_items)
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise DataFormatError(path, f"item {raw_id!r}: attributes must be a list of integers")
        attributes[index] = tuple(values)
    return tuple(attributes)


def _read_item_meta(
    path: pathlib.Path, asins: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    text = {f: [""] * len(asins) for f in TEXT_FIELDS}
    seen: dict[int, int] = {}
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        record = parse_json(line, path, number)
        if not isinstance(record, dict) or "p5_item_id" not in record:
            raise DataFormatError(path, "expected an object with a 'p5_item_id'", number)
        index = _item_index(record["p5_item_id"], path, number, len(asins))
        if index in seen:
            raise DataFormatError(
                path, f"duplicated p5_item_id {index + 1} (first on line {seen[index]})", number
            )
        seen[index] = number
        asin = record.get("asin")
        if asin is not None and asin != asins[index]:
            raise DataFormatError(
                path, f"asin {asin!r} of item {index + 1} is {asins[index]!r} in {DATAMAPS}", number
            )
        for field in TEXT_FIELDS:
            parse = format_categories if field == "categories" else clean_text
            try:
                text[field][index] = parse(record.get(field))
            except ValueError as e:
                raise DataFormatError(path, f"field {field!r}: {e}", number) from None
    return {f: tuple(v) for f, v in text.items()}


def _read_textual_ids(path: pathlib.Path, asins: tuple[str, ...]) -> tuple[str, ...]:
    index_of = {asin: i for i, asin in enumerate(asins)}
    titles = [""] * len(asins)
    seen: dict[str, int] = {}
    for number, line in iter_lines(path):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        asin = parts[0]
        if asin not in index_of:
            raise DataFormatError(path, f"unknown item {asin!r}: not in {DATAMAPS}", number)
        if asin in seen:
            raise DataFormatError(
                path, f"duplicated item {asin!r} (first on line {seen[asin]})", number
            )
        seen[asin] = number
        titles[index_of[asin]] = clean_text(parts[1]) if len(parts) > 1 else ""
    return tuple(titles)


def load_p5(
    directory: str | os.PathLike,
    name: str | None = None,
    bid_seed: int = 0,
    min_seq_len: int = 3,
) -> SeqRecDataset:
    """Loads a P5 folder (see module docstring); bids are simulated with `bid_seed`.

    `name` defaults to the folder's name.
    """
    directory = require_dir(directory)
    datamaps_path = require_file(directory / DATAMAPS)
    sequences_path = require_file(directory / SEQUENCES)
    datamaps = read_object(datamaps_path)
    asins = _item_ids(datamaps, datamaps_path)
    id2user = _id_map(datamaps, "id2user", datamaps_path)
    user_ids, sequences = _read_sequences(sequences_path, len(asins), id2user, min_seq_len)
    read = [datamaps_path, sequences_path]

    attributes: tuple[tuple[int, ...], ...] = ((),) * len(asins)
    if (directory / ATTRIBUTES).is_file():
        attributes = _read_attributes(directory / ATTRIBUTES, len(asins))
        read.append(directory / ATTRIBUTES)
    text = {f: ("",) * len(asins) for f in TEXT_FIELDS}
    if (directory / ITEM_META).is_file():
        text = _read_item_meta(directory / ITEM_META, asins)
        read.append(directory / ITEM_META)
    elif (directory / TEXTUAL_IDS).is_file():
        text["title"] = _read_textual_ids(directory / TEXTUAL_IDS, asins)
        read.append(directory / TEXTUAL_IDS)

    bids, bid_source = simulate_bids(len(asins), bid_seed)
    items = Items(ids=asins, text=text, attributes=attributes, bids=bids, bid_source=bid_source)
    return SeqRecDataset(
        name=name or directory.name,
        items=items,
        user_ids=user_ids,
        sequences=sequences,
        source_files=provenance(read),
    )


def _write_text(path: pathlib.Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_p5(dataset: SeqRecDataset, out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Writes `dataset` as a P5 folder that `load_p5` reads back; returns the files written.

    Writes sequential_data.txt, datamaps.json, item_meta.jsonl (the text fields, categories as
    the joined string), and item2attributes.json when any item has attributes. Bids are not
    written: they are simulated again on load.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = dataset.items
    written = [out / SEQUENCES, out / DATAMAPS, out / ITEM_META]
    _write_text(
        written[0],
        "".join(
            f"{u + 1} {' '.join(str(int(i) + 1) for i in seq)}\n"
            for u, seq in enumerate(dataset.sequences)
        ),
    )
    datamaps = {
        "id2user": {str(u + 1): user for u, user in enumerate(dataset.user_ids)},
        "id2item": {str(i + 1): item for i, item in enumerate(items.ids)},
    }
    _write_text(written[1], json.dumps(datamaps, indent=1) + "\n")
    meta_lines = []
    for i, item in enumerate(items.ids):
        record = {"p5_item_id": i + 1, "asin": item}
        record.update({f: items.text[f][i] for f in TEXT_FIELDS if f in items.text})
        meta_lines.append(json.dumps(record) + "\n")
    _write_text(written[2], "".join(meta_lines))
    if any(items.attributes):
        attributes = {str(i + 1): list(a) for i, a in enumerate(items.attributes) if a}
        written.append(out / ATTRIBUTES)
        _write_text(written[-1], json.dumps(attributes) + "\n")
    return written
