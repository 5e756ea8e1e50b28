"""The PSJ holistic score s_hol = w^T s, importance levels -> weights, and PairAUC.

Weights live on the simplex. The aggregator picks a discrete importance level 0..4 per aspect;
a level vector l becomes weights l / sum(l), and the all-zero vector becomes uniform weights
(algorithms.md section 3). At inference the weights are the expected levels, normalised.

Missing evidence (NaN aspects) is handled by renormalising the weights over the aspects present:
s_hol = sum_{a present} w_a s_a / sum_{a present} w_a. If the weights put no mass on any present
aspect, the present aspects are averaged (the "all zero -> uniform" rule applied to what is
left); with no aspect present s_hol is NaN. A pair compares its two items on the aspects present
for both (`joint_evidence`), so a missing aspect never favours one side.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_LEVELS = 5  # importance levels 0..4


def level_weights(levels_xa: jax.Array) -> jax.Array:
    """float32 [..., A] weights of level vectors [..., A]: l / sum(l); all zero -> uniform."""
    levels = levels_xa.astype(jnp.float32)
    total = levels.sum(axis=-1, keepdims=True)
    uniform = jnp.full_like(levels, 1.0 / levels.shape[-1])
    return jnp.where(total > 0, levels / jnp.where(total > 0, total, 1.0), uniform)


def expected_weights(logits_xal: jax.Array) -> jax.Array:
    """float32 [..., A] inference weights w_a = E[l_a] / sum_b E[l_b] from logits [..., A, L]."""
    probs = jax.nn.softmax(logits_xal.astype(jnp.float32), axis=-1)
    expected_xa = (probs * jnp.arange(logits_xal.shape[-1], dtype=jnp.float32)).sum(axis=-1)
    return level_weights(expected_xa)


def holistic_score(weights_xa: jax.Array, evidence_xa: jax.Array) -> jax.Array:
    """float32 [...] s_hol = w^T s renormalised over the present (finite) aspects; NaN if none."""
    present = jnp.isfinite(evidence_xa)
    s = jnp.where(present, evidence_xa, 0.0)  # zeros, not NaN, keep the gradients finite
    w = jnp.where(present, weights_xa, 0.0)
    mass = w.sum(axis=-1)
    count = present.sum(axis=-1)
    weighted = (w * s).sum(axis=-1) / jnp.where(mass > 0, mass, 1.0)
    averaged = s.sum(axis=-1) / jnp.maximum(count, 1)
    return jnp.where(count == 0, jnp.nan, jnp.where(mass > 0, weighted, averaged))


def joint_evidence(ev_i_xa: jax.Array, ev_j_xa: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Both items' evidence with NaN wherever either item lacks the aspect."""
    both = jnp.isfinite(ev_i_xa) & jnp.isfinite(ev_j_xa)
    return jnp.where(both, ev_i_xa, jnp.nan), jnp.where(both, ev_j_xa, jnp.nan)


def pair_margin(weights_xa: jax.Array, ev_i_xa: jax.Array, ev_j_xa: jax.Array) -> jax.Array:
    """float32 [...] s_hol(a_i) - s_hol(a_j) on the jointly present aspects; NaN if none."""
    ev_i, ev_j = joint_evidence(ev_i_xa, ev_j_xa)
    return holistic_score(weights_xa, ev_i) - holistic_score(weights_xa, ev_j)


def comparable(ev_i_na: np.ndarray, ev_j_na: np.ndarray) -> np.ndarray:
    """bool [n]: the pairs sharing at least one present aspect (the others have no s_hol)."""
    return (np.isfinite(ev_i_na) & np.isfinite(ev_j_na)).any(axis=-1)


def pair_auc(weights_na: np.ndarray, ev_i_na: np.ndarray, ev_j_na: np.ndarray) -> float:
    """PairAUC: the fraction of pairs with s_hol(a_i) > s_hol(a_j), ties counting 0.5.

    Pairs without a jointly present aspect are left out. weights_na may be [A] (shared by all).
    """
    margin_n = np.asarray(pair_margin(jnp.asarray(weights_na, jnp.float32),
                                      jnp.asarray(ev_i_na), jnp.asarray(ev_j_na)))
    margin_n = margin_n[np.isfinite(margin_n)]
    if margin_n.size == 0:
        return float("nan")
    return float(np.mean((margin_n > 0) + 0.5 * (margin_n == 0)))


def comparable_pairs(
    x_nf: np.ndarray, ev_i_na: np.ndarray, ev_j_na: np.ndarray
) -> dict[str, np.ndarray]:
    """Training arrays {"x", "ev_i", "ev_j"} (float32) of the pairs with an aspect present for
    both items: the others carry no preference signal. Raises if none is left."""
    keep = comparable(ev_i_na, ev_j_na)
    if not keep.any():
        raise ValueError("no pair has an aspect present for both items")
    return {"x": np.asarray(x_nf, np.float32)[keep],
            "ev_i": np.asarray(ev_i_na, np.float32)[keep],
            "ev_j": np.asarray(ev_j_na, np.float32)[keep]}
