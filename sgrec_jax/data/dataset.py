"""The dataset type every loader produces and every later stage consumes.

Items are identified internally by a dense index `0 .. num_items-1`; users by `0 .. num_users-1`.
External ids (ASINs, reviewer ids, the LETTER/P5 integer ids as strings) are kept for
provenance and for joining side files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence

import numpy as np
from etils import epath

from sgrec_jax.data.errors import DataFormatError

# Text fields an item may carry; loaders fill the ones their source has and leave "" otherwise.
TEXT_FIELDS = ("title", "categories", "brand", "description")


@dataclasses.dataclass(frozen=True)
class Items:
    """Item side information, indexed by internal item index.

    Attributes:
      ids: external item ids (ASIN, or the source's own id as a string), length N.
      text: field name -> per-item string (fields from TEXT_FIELDS; missing values are "").
      attributes: per-item tuple of categorical attribute ids (e.g. S3-Rec's anonymous
        brand/category ids); empty tuples when the source has none.
      bids: float32 [N] advertiser bids. Public data has no prices, so these are simulated
        unless `bid_source` says otherwise.
      bid_source: how the bids were made, e.g. "simulated: lognormal(mu=0, sigma=0.5), seed 0".
    """

    ids: tuple[str, ...]
    text: Mapping[str, tuple[str, ...]]
    attributes: tuple[tuple[int, ...], ...]
    bids: np.ndarray
    bid_source: str

    def __post_init__(self):
        n = len(self.ids)
        for field, values in self.text.items():
            if len(values) != n:
                raise ValueError(f"items.text[{field!r}] has {len(values)} entries, expected {n}")
        if len(self.attributes) != n:
            raise ValueError(f"items.attributes has {len(self.attributes)} entries, expected {n}")
        if self.bids.shape != (n,):
            raise ValueError(f"items.bids has shape {self.bids.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.ids)

    def document(self, index: int, fields: Sequence[str] = TEXT_FIELDS) -> str:
        """The item's text fields joined into one document (for embeddings and judges)."""
        parts = [self.text[f][index] for f in fields if f in self.text and self.text[f][index]]
        return " . ".join(parts)


@dataclasses.dataclass(frozen=True)
class SeqRecDataset:
    """Users' time-ordered item sequences plus item side information.

    Attributes:
      name: short dataset name (e.g. "beauty").
      items: item side information.
      user_ids: external user ids, length U.
      sequences: per user, int32 array of internal item indices, oldest first.
      source_files: path -> sha256 of every file the dataset was read from (provenance).
    """

    name: str
    items: Items
    user_ids: tuple[str, ...]
    sequences: tuple[np.ndarray, ...]
    source_files: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.user_ids) != len(self.sequences):
            raise ValueError(
                f"{len(self.user_ids)} user ids but {len(self.sequences)} sequences"
            )

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def stats(self) -> dict[str, float | int]:
        """Summary statistics in the form the PROVENANCE.md files give them."""
        lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        if lengths.size == 0:
            raise DataFormatError(None, f"dataset {self.name!r} has no users")
        popularity = np.bincount(np.concatenate(self.sequences), minlength=self.num_items)
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "avg_seq_len": float(lengths.mean()),
            "median_seq_len": float(np.median(lengths)),
            "min_seq_len": int(lengths.min()),
            "max_seq_len": int(lengths.max()),
            "density": float(self.num_interactions / (self.num_users * self.num_items)),
            "min_item_popularity": int(popularity.min()),
            "max_item_popularity": int(popularity.max()),
        }


def validate_sequences(
    sequences: Sequence[np.ndarray],
    num_items: int,
    *,
    path: str | os.PathLike | None,
    lines: Sequence[int | None] | None = None,
    min_length: int = 3,
) -> None:
    """Checks ids are in range and sequences long enough for leave-one-out.

    `lines[u]` is the line (or None) of user u's record in `path`, used in the error message.
    Leave-one-out needs at least 3 items: one history item, a validation and a test target.
    """
    if num_items == 0:
        raise DataFormatError(path, "empty catalog: no items")
    if len(sequences) == 0:
        raise DataFormatError(path, "no users")
    for u, seq in enumerate(sequences):
        line = None if lines is None else lines[u]
        if len(seq) < min_length:
            raise DataFormatError(
                path,
                f"sequence too short: {len(seq)} items, leave-one-out needs >= {min_length}",
                line,
            )
        bad = (seq < 0) | (seq >= num_items)
        if bad.any():
            raise DataFormatError(path, f"unknown item id {int(seq[bad.argmax()])}", line)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, recorded as provenance."""
    digest = hashlib.sha256()
    with epath.Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
