"""Counted training transitions: every a -> b of the training sequences with its count.

The counting baselines (`models/counting.py`) and the ranking diagnostics
(`evaluation/diagnostics.py`) read the training data only through these counts. The in-memory
path counts them from the sequences; from shards the writer counts them while it writes the
training split (`TransitionCounter`, stored as the side table "transitions"), so a run from
shards never needs the sequences for them.

Why the training examples give exactly these pairs: training example t of a user with sequence s
(n items) is (s[:t] -> s[t]) for t = 1 .. n-3 (`data/split.py`), so its last history item and
its target are s[t-1] -> s[t], and over t these are the consecutive pairs of the training
sequence s[:n-2], which is what `models.counting.training_transitions` counts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sgrec_jax.data.split import PAD_ITEM

_SHIFT = 32  # A pair's key while counting: from << 32 | to (item ids are int32).


@dataclasses.dataclass(frozen=True)
class TransitionCounts:
    """The distinct training transitions, in (from, to) order, with their counts.

    Attributes:
      num_items: N, the catalog size.
      from_t, to_t: int32 [T] the distinct pairs a -> b, sorted by a then b.
      count_t: int64 [T] how often each pair occurs (>= 1).
    """

    num_items: int
    from_t: np.ndarray
    to_t: np.ndarray
    count_t: np.ndarray

    def __post_init__(self):
        shapes = {self.from_t.shape, self.to_t.shape, self.count_t.shape}
        if len(shapes) != 1 or self.from_t.ndim != 1:
            raise ValueError(f"from_t, to_t and count_t must be equal-length vectors, got "
                             f"shapes {sorted(shapes)}")
        for name, items in (("from_t", self.from_t), ("to_t", self.to_t)):
            if items.size and (items.min() < 0 or items.max() >= self.num_items):
                raise ValueError(f"{name} holds items outside 0..{self.num_items - 1}")
        if self.count_t.size and self.count_t.min() < 1:
            raise ValueError("count_t must be >= 1")

    @classmethod
    def from_pairs(cls, from_t: np.ndarray, to_t: np.ndarray, num_items: int) -> TransitionCounts:
        """Counts of the (possibly repeated) pairs from_t[i] -> to_t[i]."""
        counter = TransitionCounter()
        counter.add(from_t, to_t)
        return counter.result(num_items)

    def target_counts(self) -> np.ndarray:
        """int64 [N]: how often each item is a training target (as
        `counting.training_target_counts`)."""
        return np.bincount(self.to_t, weights=self.count_t,
                           minlength=self.num_items).astype(np.int64)

    def top_successors(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most frequent successors of every item: (items [N, k] int32, counts [N, k] int32).

        Row a lists the b of the pairs a -> b by descending count (ties: smaller b first); rows
        with fewer than k successors end in item 0 with count 0 (count 0 = no entry). Counts are
        capped at 2**31 - 1.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        items = np.zeros((self.num_items, k), np.int32)
        counts = np.zeros((self.num_items, k), np.int32)
        order = np.lexsort((self.to_t, -self.count_t, self.from_t))
        from_t = self.from_t[order]
        group_start = np.searchsorted(from_t, from_t, side="left")
        rank = np.arange(from_t.size) - group_start
        keep = rank < k
        rows, cols = from_t[keep], rank[keep]
        items[rows, cols] = self.to_t[order][keep]
        counts[rows, cols] = np.minimum(self.count_t[order][keep], np.iinfo(np.int32).max)
        return items, counts

    def as_table(self) -> dict[str, np.ndarray]:
        """The arrays of the "transitions" side table."""
        return {"from_t": self.from_t, "to_t": self.to_t, "count_t": self.count_t}


class TransitionCounter:
    """Counts transitions block by block in memory proportional to the distinct pairs.

    Blocks are buffered and merged into the sorted counts once the buffer is as large as the
    counts (and at least `min_flush` pairs), so the merging costs O(P log P) over P pairs
    however small the blocks.
    """

    def __init__(self, min_flush: int = 1 << 22):
        self._keys = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_size = 0
        self._min_flush = min_flush

    def add(self, from_t: np.ndarray, to_t: np.ndarray) -> None:
        """Counts the pairs from_t[i] -> to_t[i]; pairs with a PAD_ITEM end are skipped."""
        from_t, to_t = np.asarray(from_t, np.int64), np.asarray(to_t, np.int64)
        real = (from_t != PAD_ITEM) & (to_t != PAD_ITEM)
        keys = (from_t[real] << _SHIFT) | to_t[real]
        self._pending.append(keys)
        self._pending_size += keys.size
        if self._pending_size >= max(self._min_flush, self._keys.size):
            self._flush()

    def add_examples(self, history_nh: np.ndarray, target_n: np.ndarray) -> None:
        """Counts the training examples' (last history item -> target) pairs (module docstring)."""
        self.add(np.asarray(history_nh)[:, -1], target_n)

    def _flush(self) -> None:
        if not self._pending:
            return
        new_keys, new_counts = np.unique(np.concatenate(self._pending), return_counts=True)
        self._pending, self._pending_size = [], 0
        keys, inverse = np.unique(np.concatenate([self._keys, new_keys]), return_inverse=True)
        # Counts stay below 2**53, where float64 weights add exactly.
        self._counts = np.bincount(inverse, weights=np.concatenate([self._counts, new_counts]),
                                   minlength=keys.size).astype(np.int64)
        self._keys = keys

    def result(self, num_items: int) -> TransitionCounts:
        """The counts so far, over a catalog of num_items (ValueError for ids outside it)."""
        self._flush()
        return TransitionCounts(num_items, (self._keys >> _SHIFT).astype(np.int32),
                                (self._keys & ((1 << _SHIFT) - 1)).astype(np.int32),
                                self._counts.copy())
