"""McAuley's raw Amazon review and metadata files -> SeqRecDataset, as the P5/S3-Rec scripts do.

Inputs (gzip, one record per line):
  reviews: 2014 `reviews_<Category>_5.json.gz` or 2018 `<Category>_5.json.gz`, JSON lines with
    reviewerID, asin, unixReviewTime.
  meta: 2014 `meta_<Category>.json.gz`, one Python dict literal per line (read with
    ast.literal_eval); 2018 `meta_<Category>.json.gz`, JSON lines. Text fields: title,
    categories (2014, a list of paths) or category (2018, one path), brand, description (a
    string or a list of strings).

Conversion (S3-Rec `data/data_process.py`, which P5 follows): every review is an interaction,
whatever its rating, repeats included; each user's reviews are sorted by unixReviewTime (stable,
so ties keep file order); an optional iterative k-core filter (users and items with >= k
interactions, counted with repeats) runs to its fixed point; then users are numbered in order of
first appearance in the reviews file and items in order of first appearance when walking those
users' sorted sequences. Unlike S3-Rec, a user whose every item was filtered away is dropped
rather than kept with an empty sequence. Use `write_p5` (formats.p5) to save the result.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import os
import pathlib
import re
from collections.abc import Iterable

import numpy as np

from sgrec_jax.data.bids import simulate_bids
from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.formats import (
    clean_text,
    format_categories,
    iter_lines,
    parse_json,
    provenance,
    require_file,
)

# Finds a meta line's ASIN without parsing the whole line: meta files hold the full category,
# far more items than the 5-core keeps, and ast.literal_eval is slow.
_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


@dataclasses.dataclass(frozen=True)
class Review:
    user: str
    item: str
    time: int


def read_reviews(path: str | os.PathLike) -> list[Review]:
    """The reviews of a JSON-lines file (plain or .gz), in file order."""
    path = require_file(path)
    reviews = []
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        record = parse_json(line, path, number)
        if not isinstance(record, dict):
            raise DataFormatError(path, "expected a JSON object", number)
        user, item, time = (record.get(k) for k in ("reviewerID", "asin", "unixReviewTime"))
        if not isinstance(user, str) or not user:
            raise DataFormatError(path, "missing or non-string 'reviewerID'", number)
        if not isinstance(item, str) or not item:
            raise DataFormatError(path, "missing or non-string 'asin'", number)
        if isinstance(time, bool) or not isinstance(time, int):
            raise DataFormatError(path, "missing or non-integer 'unixReviewTime'", number)
        reviews.append(Review(user, item, time))
    return reviews


def _parse_meta_line(line: str, path: pathlib.Path, number: int) -> dict:
    if line.lstrip().startswith("{'"):  # 2014: a Python dict literal.
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError) as e:
            raise DataFormatError(path, f"malformed Python dict literal: {e}", number) from None
    else:
        record = parse_json(line, path, number)
    if not isinstance(record, dict):
        raise DataFormatError(path, "expected an object", number)
    return record


def read_meta(
    path: str | os.PathLike, asins: Iterable[str] | None = None
) -> dict[str, dict[str, str]]:
    """ASIN -> {text field: clean string} for the items in `asins` (all items when None).

    The first record of an ASIN wins (2018 meta files repeat some).
    """
    path = require_file(path)
    wanted = None if asins is None else set(asins)
    meta: dict[str, dict[str, str]] = {}
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        found = _ASIN.search(line)
        if wanted is not None and found and (found[1] not in wanted or found[1] in meta):
            continue
        record = _parse_meta_line(line, path, number)
        asin = record.get("asin")
        if not isinstance(asin, str) or not asin:
            raise DataFormatError(path, "missing or non-string 'asin'", number)
        if asin in meta or (wanted is not None and asin not in wanted):
            continue
        fields = {}
        for field in TEXT_FIELDS:
            try:
                if field == "categories":
                    fields[field] = format_categories(
                        record.get("categories", record.get("category"))
                    )
                else:
                    fields[field] = clean_text(record.get(field))
            except ValueError as e:
                raise DataFormatError(path, f"field {field!r}: {e}", number) from None
        meta[asin] = fields
    return meta


def user_sequences(reviews: Iterable[Review]) -> dict[str, list[str]]:
    """User -> items sorted by review time (stable), users in order of first appearance."""
    timed: dict[str, list[tuple[int, str]]] = {}
    for r in reviews:
        timed.setdefault(r.user, []).append((r.time, r.item))
    return {u: [item for _, item in sorted(v, key=lambda x: x[0])] for u, v in timed.items()}


def kcore_filter(sequences: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Repeatedly drops users and items with < k interactions until none is left (k <= 1: no-op).

    Keeps the order of users and of each user's items.
    """
    while True:
        item_count = collections.Counter(i for items in sequences.values() for i in items)
        if all(len(v) >= k for v in sequences.values()) and all(
            c >= k for c in item_count.values()
        ):
            return sequences
        sequences = {
            u: kept
            for u, items in sequences.items()
            if len(items) >= k and (kept := [i for i in items if item_count[i] >= k])
        }


def load_amazon_raw(
    reviews_path: str | os.PathLike,
    meta_path: str | os.PathLike,
    *,
    name: str,
    kcore: int = 5,
    bid_seed: int = 0,
    min_seq_len: int = 3,
) -> SeqRecDataset:
    """Converts raw reviews + meta files into a dataset (see module docstring)."""
    reviews_path, meta_path = require_file(reviews_path), require_file(meta_path)
    sequences = kcore_filter(user_sequences(read_reviews(reviews_path)), kcore)
    if not sequences:
        raise DataFormatError(reviews_path, f"no users left after the {kcore}-core filter")
    item_index: dict[str, int] = {}
    for items in sequences.values():
        for item in items:
            item_index.setdefault(item, len(item_index))
    for user, items in sequences.items():
        if len(items) < min_seq_len:
            raise DataFormatError(
                reviews_path,
                f"user {user!r} has {len(items)} interactions after the {kcore}-core filter; "
                f"leave-one-out needs >= {min_seq_len} (raise kcore)",
            )
    asins = tuple(item_index)
    meta = read_meta(meta_path, asins)
    empty = dict.fromkeys(TEXT_FIELDS, "")
    text = {f: tuple(meta.get(a, empty)[f] for a in asins) for f in TEXT_FIELDS}
    bids, bid_source = simulate_bids(len(asins), bid_seed)
    return SeqRecDataset(
        name=name,
        items=Items(
            ids=asins,
            text=text,
            attributes=((),) * len(asins),
            bids=bids,
            bid_source=bid_source,
        ),
        user_ids=tuple(sequences),
        sequences=tuple(
            np.array([item_index[i] for i in items], dtype=np.int32)
            for items in sequences.values()
        ),
        source_files=provenance([reviews_path, meta_path]),
    )
