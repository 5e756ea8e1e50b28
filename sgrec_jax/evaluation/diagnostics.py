"""Ranking diagnostics: why a recommender ranks as it does, measured against the training data.

Accuracy alone does not say what a model has learned. These numbers split it by two properties
of the test request and describe what the top-k lists hold, all relative to the training part
of each user's sequence (every item but the last two; `TrainingStatistics`):

- "follows": the target b directly follows the user's last history item a somewhere in the
  training sequences (a -> b is a seen transition). Transition counting can only score such
  targets; a model that beats it must also hit the others.
- Target popularity: the training-target frequency of the test target (how often that item is a
  training target, i.e. appears at position >= 1 of a training sequence), cut into buckets
  with about equal numbers of test users (see `ranking_diagnostics`).
- The lists themselves: how much of the top k repeats the history, how much is the 1% most
  popular training targets, and (with SIDs) how many distinct first SID codes appear.

Keys (k = 10), all under "diag/":
  follows_share                     share of users whose target follows their last history item
  recall@10|follows, ndcg@10|follows, recall@10|not_follows, ndcg@10|not_follows
                                    the metrics within each group (NaN for an empty group)
  recall@10|follows_<c>, follows_<c>_share  for c in once / few / often: the follows users split
                                    by how often a -> b occurs in training (1, 2-3, >= 4 times),
                                    and each part's share of all users. Counting scores a
                                    transition seen once as highly as any other; a model that
                                    generalises rather than memorises loses most on "once".
  recall@10|pop_q<i>                recall within popularity bucket i (q1 = least popular)
  pop_q<i>_share, pop_q<i>_freq_min, pop_q<i>_freq_max
                                    the bucket's share of users and its target-frequency range
  history_share@10                  share of real top-10 slots holding an item of the history
  popular_share@10                  share of real top-10 slots holding one of the ceil(1% of N)
                                    most frequent training targets (popularity order)
  first_codes@10                    distinct first SID codes over all users' real top-10 items
                                    (only with codes_nl)
"Real" slots hold a catalog item (0 <= id < N); empty slots (PAD_ITEM) do not count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from sgrec_jax.data.transitions import TransitionCounts
from sgrec_jax.evaluation.metrics import ranking_metrics
from sgrec_jax.models.counting import popularity_order, training_transitions

POPULAR_FRACTION = 0.01  # popular_share@k counts the ceil(1% of N) most frequent targets.
# The follows users split by the training count of their transition: (name, min, max).
FOLLOWS_COUNT_GROUPS = (("once", 1, 1), ("few", 2, 3), ("often", 4, None))


@dataclasses.dataclass(frozen=True)
class TrainingStatistics:
    """What the diagnostics need from the training sequences, computed once.

    Attributes:
      num_items: N, the catalog size.
      transition_keys: int64 sorted unique keys a * N + b of every transition a -> b seen
        consecutively in a training sequence.
      transition_count: int64, aligned with transition_keys: how often each transition occurs.
      target_count_n: int64 [N], how often each item is a training target.
    """

    num_items: int
    transition_keys: np.ndarray
    transition_count: np.ndarray
    target_count_n: np.ndarray

    @classmethod
    def from_sequences(
        cls, sequences: Sequence[np.ndarray], num_items: int
    ) -> TrainingStatistics:
        """From the training sequences (each user's items but the last two, oldest first)."""
        from_t, to_t = training_transitions(sequences, num_items)
        keys, counts = np.unique(from_t * num_items + to_t, return_counts=True)
        return cls(
            num_items=num_items,
            transition_keys=keys,
            transition_count=counts.astype(np.int64),
            target_count_n=np.bincount(to_t, minlength=num_items).astype(np.int64),
        )

    @classmethod
    def from_counts(cls, counts: TransitionCounts) -> TrainingStatistics:
        """The same statistics from counted training transitions (a run over shards); the
        counts' (from, to) order is the order of the keys."""
        keys = counts.from_t.astype(np.int64) * counts.num_items + counts.to_t
        return cls(num_items=counts.num_items, transition_keys=keys,
                   transition_count=counts.count_t.astype(np.int64),
                   target_count_n=counts.target_counts())

    def follows(self, from_u: np.ndarray, to_u: np.ndarray) -> np.ndarray:
        """bool [U]: whether from_u[i] -> to_u[i] is a training transition (False for PAD)."""
        return self.transition_counts(from_u, to_u) > 0

    def transition_counts(self, from_u: np.ndarray, to_u: np.ndarray) -> np.ndarray:
        """int64 [U]: how often from_u[i] -> to_u[i] occurs in training (0 for PAD)."""
        from_u, to_u = np.asarray(from_u, np.int64), np.asarray(to_u, np.int64)
        real = (from_u >= 0) & (to_u >= 0)
        if not len(self.transition_keys):
            return np.zeros(len(from_u), np.int64)
        keys = np.where(real, from_u * self.num_items + to_u, -1)
        at = np.minimum(np.searchsorted(self.transition_keys, keys), len(self.transition_keys) - 1)
        return np.where(real & (self.transition_keys[at] == keys), self.transition_count[at], 0)


def _group_metrics(
    items_uk: np.ndarray, targets_u: np.ndarray, group_u: np.ndarray, k: int
) -> tuple[float, float]:
    """(recall@k, ndcg@k) over the users in group_u; NaN for an empty group."""
    if not group_u.any():
        return math.nan, math.nan
    means = ranking_metrics(items_uk[group_u], targets_u[group_u], ks=(k,))
    return means[f"recall@{k}"], means[f"ndcg@{k}"]


def popularity_edges(frequency_u: np.ndarray, num_buckets: int) -> np.ndarray:
    """float [B - 1]: e_1 <= ... <= e_{B-1}, np.quantile (linear) of frequency_u at 1/B, ...,
    (B-1)/B; popularity_buckets' edges."""
    return np.quantile(frequency_u, np.arange(1, num_buckets) / num_buckets)


def popularity_buckets(frequency_u: np.ndarray, num_buckets: int,
                       edges: np.ndarray | None = None) -> np.ndarray:
    """int [U] bucket 0 .. num_buckets - 1 of each user's target frequency.

    Edges e_1 <= ... <= e_{B-1} are popularity_edges(frequency_u, B) unless given (e.g. another
    split's, so two splits share buckets); bucket i holds e_i < frequency <= e_{i+1} (e_0 = -inf,
    e_B = +inf). Equal frequencies share a bucket, so with many ties the buckets hold only about
    1/B of the users each, and a bucket can be empty.
    """
    if edges is None:
        edges = popularity_edges(frequency_u, num_buckets)
    elif len(edges) != num_buckets - 1:
        raise ValueError(f"{num_buckets} buckets need {num_buckets - 1} edges, got {len(edges)}")
    return np.searchsorted(edges, frequency_u, side="left")


def ranking_diagnostics(
    items_uk: np.ndarray,
    targets_u: np.ndarray,
    history_uh: np.ndarray,
    stats: TrainingStatistics,
    codes_nl: np.ndarray | None = None,
    num_buckets: int = 5,
    k: int = 10,
) -> dict[str, float]:
    """The "diag/..." numbers of the module docstring for one split's rankings.

    items_uk: int [U, K >= k] ranked items, best first (PAD_ITEM or ids outside the catalog mark
    empty slots); targets_u: int [U]; history_uh: int [U, H], PAD_ITEM-padded on the left, the
    last column the most recent item; codes_nl: int [N, L] item SIDs (first_codes@k).
    """
    items_uk, targets_u = np.asarray(items_uk), np.asarray(targets_u)
    history_uh = np.asarray(history_uh)
    num_items = stats.num_items
    if history_uh.ndim != 2 or len(history_uh) != len(targets_u) or history_uh.shape[1] == 0:
        raise ValueError(
            f"history must be [U, H >= 1] with U = {len(targets_u)} users, got shape "
            f"{history_uh.shape}"
        )
    if items_uk.ndim != 2 or items_uk.shape[1] < k:
        raise ValueError(f"items must be [U, K >= {k}], got shape {items_uk.shape}")
    if np.any(targets_u >= num_items):
        raise ValueError(f"targets must be item indices < {num_items} (the statistics' N)")
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    out: dict[str, float] = {}

    count_u = stats.transition_counts(history_uh[:, -1], targets_u)
    follows_u = count_u > 0
    out["diag/follows_share"] = float(follows_u.mean())
    for name, group_u in (("follows", follows_u), ("not_follows", ~follows_u)):
        recall, ndcg = _group_metrics(items_uk, targets_u, group_u, k)
        out[f"diag/recall@{k}|{name}"] = recall
        out[f"diag/ndcg@{k}|{name}"] = ndcg
    for name, low, high in FOLLOWS_COUNT_GROUPS:
        high = np.iinfo(np.int64).max if high is None else high
        group_u = (count_u >= low) & (count_u <= high)
        out[f"diag/recall@{k}|follows_{name}"] = _group_metrics(items_uk, targets_u, group_u, k)[0]
        out[f"diag/follows_{name}_share"] = float(group_u.mean())

    frequency_u = stats.target_count_n[targets_u]
    bucket_u = popularity_buckets(frequency_u, num_buckets)
    for b in range(num_buckets):
        group_u = bucket_u == b
        name = f"diag/pop_q{b + 1}"
        out[f"diag/recall@{k}|pop_q{b + 1}"] = _group_metrics(items_uk, targets_u, group_u, k)[0]
        out[f"{name}_share"] = float(group_u.mean())
        out[f"{name}_freq_min"] = float(frequency_u[group_u].min()) if group_u.any() else math.nan
        out[f"{name}_freq_max"] = float(frequency_u[group_u].max()) if group_u.any() else math.nan

    top_uk = items_uk[:, :k]
    real_uk = (top_uk >= 0) & (top_uk < num_items)
    slots = int(real_uk.sum())
    in_history_uk = (top_uk[:, :, None] == history_uh[:, None, :]).any(-1)
    in_history_uk &= real_uk
    out[f"diag/history_share@{k}"] = float(in_history_uk.sum() / slots) if slots else math.nan
    num_popular = math.ceil(POPULAR_FRACTION * num_items)
    popular_n = np.zeros(num_items, bool)
    popular_n[popularity_order(stats.target_count_n)[:num_popular]] = True
    popular = int(popular_n[top_uk[real_uk]].sum())
    out[f"diag/popular_share@{k}"] = float(popular / slots) if slots else math.nan
    if codes_nl is not None:
        codes_nl = np.asarray(codes_nl)
        if codes_nl.ndim != 2 or len(codes_nl) != num_items:
            raise ValueError(f"codes_nl must be [{num_items}, L], got shape {codes_nl.shape}")
        out[f"diag/first_codes@{k}"] = float(np.unique(codes_nl[top_uk[real_uk], 0]).size)
    return out
