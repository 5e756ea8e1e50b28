"""Top-K metrics of ranked recommendation lists with one held-out target per user.

Inputs are `ranked_bk` int [B, K] (item indices, best first; PAD_ITEM = -1 or any id outside the
catalog marks an empty slot, e.g. a generated SID that maps to no item) and `target_b` int [B].
The target's rank is the 0-based position of its first occurrence, so a list that repeats an
item gains nothing from the repeat. With one target per user, Recall@K equals HR@K, and
NDCG@K = 1 / log2(rank + 2) when rank < K, else 0 (the ideal DCG is 1).

Host-side numpy functions return per-user float64 arrays (for the paired bootstrap) and
`ranking_metrics` also their means; `ranking_metrics_jnp` gives the per-user values inside jit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PER_USER = "per_user"  # ranking_metrics key holding the per-user arrays.


def _check(ranked_bk: np.ndarray, target_b: np.ndarray, ks: Sequence[int]) -> None:
    if ranked_bk.ndim != 2 or target_b.ndim != 1 or len(ranked_bk) != len(target_b):
        raise ValueError(
            f"need ranked [B, K] and target [B], got shapes {ranked_bk.shape} and "
            f"{target_b.shape}"
        )
    if np.any(target_b < 0):
        raise ValueError(f"targets must be item indices >= 0, got {int(target_b.min())}")
    for k in ks:
        if not 1 <= k <= ranked_bk.shape[1]:
            raise ValueError(f"k={k} is outside 1..{ranked_bk.shape[1]} (the list length)")


def target_rank(ranked_bk: np.ndarray, target_b: np.ndarray) -> np.ndarray:
    """int64 [B]: 0-based position of the target's first occurrence; K when it is absent."""
    ranked_bk, target_b = np.asarray(ranked_bk), np.asarray(target_b)
    _check(ranked_bk, target_b, ())
    hit_bk = ranked_bk == target_b[:, None]
    return np.where(hit_bk.any(1), hit_bk.argmax(1), ranked_bk.shape[1])


def recall_at_k(ranked_bk: np.ndarray, target_b: np.ndarray, k: int) -> np.ndarray:
    """float64 [B]: 1 if the target is in the top k, else 0 (= HR@k)."""
    _check(np.asarray(ranked_bk), np.asarray(target_b), (k,))
    return (target_rank(ranked_bk, target_b) < k).astype(np.float64)


def _ndcg(rank_b: np.ndarray, k: int) -> np.ndarray:
    return np.where(rank_b < k, 1.0 / np.log2(rank_b + 2.0), 0.0)


def ndcg_at_k(ranked_bk: np.ndarray, target_b: np.ndarray, k: int) -> np.ndarray:
    """float64 [B]: 1 / log2(rank + 2) if the target's rank < k, else 0."""
    _check(np.asarray(ranked_bk), np.asarray(target_b), (k,))
    return _ndcg(target_rank(ranked_bk, target_b), k)


def ranking_metrics(
    ranked_bk: np.ndarray, target_b: np.ndarray, ks: Sequence[int] = (5, 10)
) -> dict[str, Any]:
    """Mean "recall@k" and "ndcg@k" (floats) for each k, and under PER_USER the per-user arrays.

    E.g. {"recall@5": 0.04, "ndcg@5": 0.03, "recall@10": 0.06, "ndcg@10": 0.035,
    "per_user": {"recall@5": float64 [B], ...}}.
    """
    ranked_bk, target_b = np.asarray(ranked_bk), np.asarray(target_b)
    _check(ranked_bk, target_b, ks)
    if len(target_b) == 0:
        raise ValueError("no users to evaluate")
    rank_b = target_rank(ranked_bk, target_b)
    per_user = {}
    for k in ks:
        per_user[f"recall@{k}"] = (rank_b < k).astype(np.float64)
        per_user[f"ndcg@{k}"] = _ndcg(rank_b, k)
    return {**{name: float(v.mean()) for name, v in per_user.items()}, PER_USER: per_user}


def ranking_metrics_jnp(
    ranked_bk: jax.Array, target_b: jax.Array, ks: Sequence[int] = (5, 10)
) -> dict[str, jax.Array]:
    """In-jit twin of ranking_metrics' per-user arrays: {"recall@k", "ndcg@k"} -> float32 [B].

    Shapes and ks are static; no value checks (targets must be >= 0, each k <= K).
    """
    hit_bk = ranked_bk == target_b[:, None]
    rank_b = jnp.where(hit_bk.any(1), jnp.argmax(hit_bk, 1), ranked_bk.shape[1])
    out = {}
    for k in ks:
        out[f"recall@{k}"] = (rank_b < k).astype(jnp.float32)
        out[f"ndcg@{k}"] = jnp.where(rank_b < k, 1.0 / jnp.log2(rank_b + 2.0), 0.0)
    return out


def catalog_coverage(ranked_bk: np.ndarray, num_items: int, k: int) -> float:
    """Fraction of the N catalog items that appear in at least one user's top k."""
    ranked_bk = np.asarray(ranked_bk)
    if ranked_bk.ndim != 2 or not 1 <= k <= ranked_bk.shape[1] or num_items < 1:
        raise ValueError(
            f"need ranked [B, K] with 1 <= k <= K and num_items >= 1, got shape "
            f"{ranked_bk.shape}, k={k}, num_items={num_items}"
        )
    top = ranked_bk[:, :k].ravel()
    real = top[(top >= 0) & (top < num_items)]
    return float(np.unique(real).size / num_items)


def valid_rate(ranked_bk: np.ndarray, num_items: int) -> float:
    """Fraction of the B * K returned slots holding a catalog item (0 <= id < N).

    Repeats count as valid: this measures whether generation lands on real items at all.
    """
    ranked_bk = np.asarray(ranked_bk)
    if ranked_bk.size == 0:
        raise ValueError(f"no ranked slots (shape {ranked_bk.shape})")
    return float(np.mean((ranked_bk >= 0) & (ranked_bk < num_items)))
