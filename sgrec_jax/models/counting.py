"""The floor baselines: popularity and item-to-item transition counts (no learning, numpy only).

Both are fitted by counting over the training part of each user's sequence (every item but the
last two, `sgrec_jax.data.split.training_sequences`), so validation and test targets never leak
in, and both rank the whole catalog for a batch of histories (int [U, H], PAD_ITEM = -1 on the
left, most recent item in the last column) as the protocol's evaluation expects.

- Popularity order: items by training-target frequency (how often an item is the target of a
  training example, i.e. appears at position >= 1 of a training sequence), descending, ties by
  the lower item index. `Popularity` gives every user that list.
- `ItemTransition` (benchmarks.md's "counting row"): T[a, b] = how often b directly follows a in
  a training sequence. The score of item b for a user whose history ends h_0 (most recent),
  h_1, h_2, ... is sum_j weights[j] * T[h_j, b] over the last len(weights) items (default
  weights 1, 0.5, 0.25). Items are ranked by score, ties by popularity order; items scoring 0
  thus follow in popularity order, which is the "fill the rest of the top k with the most
  popular training targets not already listed" rule.

Optionally (`exclude_history`) items of the user's history are never recommended; the protocol
does not mask history, so it is off by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import scipy.sparse

from sgrec_jax.data.split import PAD_ITEM
from sgrec_jax.data.transitions import TransitionCounts

_USERS_PER_CHUNK = 8192  # Bounds the [users, candidates, k] comparison of the popularity fill.


def training_transitions(
    sequences: Sequence[np.ndarray], num_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """int64 [T] pairs (from_t, to_t): every consecutive a -> b of every training sequence."""
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    pairs = [np.asarray(s, np.int64) for s in sequences if len(s) > 1]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    from_t = np.concatenate([s[:-1] for s in pairs])
    to_t = np.concatenate([s[1:] for s in pairs])
    for items in (from_t, to_t):
        bad = (items < 0) | (items >= num_items)
        if bad.any():
            raise ValueError(
                f"training sequences hold item {int(items[bad][0])} outside 0..{num_items - 1}"
            )
    return from_t, to_t


def training_target_counts(sequences: Sequence[np.ndarray], num_items: int) -> np.ndarray:
    """int64 [N]: how often each item is a training target (at position >= 1 of a sequence)."""
    _, to_t = training_transitions(sequences, num_items)
    return np.bincount(to_t, minlength=num_items).astype(np.int64)


def popularity_order(target_count_n: np.ndarray) -> np.ndarray:
    """int64 [N]: item indices by training-target frequency, descending, ties by lower index."""
    return np.argsort(-np.asarray(target_count_n), kind="stable").astype(np.int64)


def _check_history(history_uh: np.ndarray, num_items: int, k: int) -> np.ndarray:
    history_uh = np.asarray(history_uh)
    if history_uh.ndim != 2:
        raise ValueError(f"history must be [users, H], got shape {history_uh.shape}")
    real = history_uh[history_uh != PAD_ITEM]
    if real.size and (real.min() < 0 or real.max() >= num_items):
        raise ValueError(f"history holds item ids outside 0..{num_items - 1} (PAD_ITEM = -1)")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return history_uh.astype(np.int64)


def _top_k(
    score_un: scipy.sparse.csr_matrix | None,
    order_n: np.ndarray,
    history_uh: np.ndarray,
    k: int,
    exclude_history: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Top k per user: items with a positive score by score (ties by popularity order), then
    the most popular items not yet listed. Returns items_uk int32 (-1 once the catalog runs out)
    and the scores float32 (0 for the filled slots)."""
    num_users, num_items = len(history_uh), len(order_n)
    items_uk = np.full((num_users, k), PAD_ITEM, np.int32)
    scores_uk = np.zeros((num_users, k), np.float32)
    filled_u = np.zeros(num_users, np.int64)
    history_keys = None
    if exclude_history:
        rows, cols = np.nonzero(history_uh != PAD_ITEM)
        history_keys = np.unique(rows * num_items + history_uh[rows, cols])

    if score_un is not None:
        scored = score_un.tocoo()
        row, col, value = scored.row.astype(np.int64), scored.col.astype(np.int64), scored.data
        keep = value > 0
        if history_keys is not None:
            keep &= ~np.isin(row * num_items + col, history_keys)
        row, col, value = row[keep], col[keep], value[keep]
        rank_of_item_n = np.empty(num_items, np.int64)
        rank_of_item_n[order_n] = np.arange(num_items)
        by_rank = np.lexsort((rank_of_item_n[col], -value, row))
        row, col, value = row[by_rank], col[by_rank], value[by_rank]
        count_u = np.bincount(row, minlength=num_users)
        position = np.arange(len(row)) - (np.cumsum(count_u) - count_u)[row]
        top = position < k
        items_uk[row[top], position[top]] = col[top]
        scores_uk[row[top], position[top]] = value[top]
        filled_u = np.minimum(count_u, k)

    # A user with f scored slots skips at most f listed (and H history) items, so the first
    # k (+ H) popular items hold the k - f it needs.
    candidates_c = order_n[: k + (history_uh.shape[1] if exclude_history else 0)]
    for start in range(0, num_users, _USERS_PER_CHUNK):
        chunk = slice(start, start + _USERS_PER_CHUNK)
        taken_uc = (candidates_c[None, :, None] == items_uk[chunk, None, :]).any(-1)
        if exclude_history:
            taken_uc |= (candidates_c[None, :, None] == history_uh[chunk, None, :]).any(-1)
        free_uc = ~taken_uc
        slot_uc = filled_u[chunk, None] + np.cumsum(free_uc, axis=1) - 1
        users, cands = np.nonzero(free_uc & (slot_uc < k))
        items_uk[start + users, slot_uc[users, cands]] = candidates_c[cands]
    return items_uk, scores_uk


@dataclasses.dataclass(frozen=True)
class Popularity:
    """The same list for everyone: the popularity order (see the module docstring).

    Attributes:
      target_count_n: int64 [N] training-target frequency of each item.
    """

    target_count_n: np.ndarray

    @classmethod
    def fit(cls, sequences: Sequence[np.ndarray], num_items: int) -> Popularity:
        """Counts over training sequences (each user's items but the last two)."""
        return cls(training_target_counts(sequences, num_items))

    @classmethod
    def from_counts(cls, counts: TransitionCounts) -> Popularity:
        """The same fit from counted training transitions (a run over shards)."""
        return cls(counts.target_counts())

    def rank(
        self, history_uh: np.ndarray, k: int, *, exclude_history: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """items_uk int32 [U, k] best first, scores_uk float32 [U, k] = training-target counts."""
        num_items = len(self.target_count_n)
        history_uh = _check_history(history_uh, num_items, k)
        items_uk, _ = _top_k(None, popularity_order(self.target_count_n), history_uh, k,
                             exclude_history)
        scores_uk = np.where(items_uk >= 0, self.target_count_n[items_uk], 0).astype(np.float32)
        return items_uk, scores_uk


@dataclasses.dataclass(frozen=True)
class ItemTransition:
    """Scores items by weighted transition counts from the last history items (module docstring).

    Attributes:
      transitions_nn: float64 CSR [N, N], T[a, b] = training count of a -> b.
      target_count_n: int64 [N] training-target frequency (the tie-break and fill order).
      weights: weight of the most recent history item, the one before, ...; the window is their
        number.
    """

    transitions_nn: scipy.sparse.csr_matrix
    target_count_n: np.ndarray
    weights: tuple[float, ...] = (1.0, 0.5, 0.25)

    def __post_init__(self):
        weights = np.asarray(self.weights, np.float64)
        if weights.ndim != 1 or weights.size == 0:
            raise ValueError(f"weights must be a non-empty list of numbers, got {self.weights}")
        if not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.max() <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {self.weights}")

    @classmethod
    def fit(
        cls, sequences: Sequence[np.ndarray], num_items: int,
        weights: Sequence[float] = (1.0, 0.5, 0.25),
    ) -> ItemTransition:
        """Counts over training sequences (each user's items but the last two)."""
        from_t, to_t = training_transitions(sequences, num_items)
        transitions = scipy.sparse.csr_matrix(
            (np.ones(len(from_t)), (from_t, to_t)), shape=(num_items, num_items)
        )  # Duplicate (a, b) entries are summed: counts.
        return cls(transitions, np.bincount(to_t, minlength=num_items).astype(np.int64),
                   tuple(float(w) for w in weights))

    @classmethod
    def from_counts(
        cls, counts: TransitionCounts, weights: Sequence[float] = (1.0, 0.5, 0.25)
    ) -> ItemTransition:
        """The same fit from counted training transitions (a run over shards)."""
        n = counts.num_items
        transitions = scipy.sparse.csr_matrix(
            (counts.count_t.astype(np.float64), (counts.from_t, counts.to_t)), shape=(n, n)
        )
        return cls(transitions, counts.target_counts(), tuple(float(w) for w in weights))

    def scores(self, history_uh: np.ndarray) -> scipy.sparse.csr_matrix:
        """float64 CSR [U, N]: sum_j weights[j] * T[h_j, :], h_0 the most recent history item."""
        num_items = self.transitions_nn.shape[0]
        history_uh = _check_history(history_uh, num_items, 1)
        recent_uw = history_uh[:, ::-1][:, : len(self.weights)]
        users, slots = np.nonzero(recent_uw != PAD_ITEM)
        weights = np.asarray(self.weights, np.float64)
        mix_un = scipy.sparse.csr_matrix(
            (weights[slots], (users, recent_uw[users, slots])), shape=(len(history_uh), num_items)
        )
        return (mix_un @ self.transitions_nn).tocsr()

    def rank(
        self, history_uh: np.ndarray, k: int, *, exclude_history: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """items_uk int32 [U, k] best first, scores_uk float32 [U, k] (0 for filled slots)."""
        num_items = self.transitions_nn.shape[0]
        history_uh = _check_history(history_uh, num_items, k)
        return _top_k(self.scores(history_uh), popularity_order(self.target_count_n),
                      history_uh, k, exclude_history)
