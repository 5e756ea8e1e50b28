"""Robust group z-score `z_G(v)` (algorithms.md, top): the one place this equation lives.

Computed in float32 over the last axis (the group of G candidates of one request):
the group is shifted by its first value before the statistics (`d = v - v_1`), so a constant
group gives d = 0 exactly; population std (ddof 0); `eps = 1e-6`; and z is exactly 0 for a group
that is constant (std <= 1e-6 * max(1, mean |v|)) or has fewer than 2 finite values. A naive
`std == 0` test fails in float32: a group of sixteen 0.7s gives z = 0.107 without the shift.

NaN means "not judged": a group counts as judged only if all G values are finite; an unjudged
group gets z = 0 and is reported through `judged`. Only jnp element-wise ops, an iota and
last-axis sums are used, so the Pallas kernel (pallas_advantage.py) runs this same function on
its blocks.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

EPS = 1e-6
CONSTANT_RTOL = 1e-6


class GroupStats(NamedTuple):
    """Per-group statistics of v [..., G] (leading dims written `b`).

    Attributes:
      z_bg: float32 [..., G] the robust z-score; exactly 0 for unjudged or constant groups.
      constant_b: bool [...] judged and constant (or G = 1): the "zero-std" groups.
      judged_b: bool [...] all G values finite.
      mean_b: float32 [...] mean of the finite values (NaN when there are none).
      std_b: float32 [...] population std of the finite values.
    """

    z_bg: jax.Array
    constant_b: jax.Array
    judged_b: jax.Array
    mean_b: jax.Array
    std_b: jax.Array


def group_stats(v_bg: jax.Array) -> GroupStats:
    """Group statistics and robust z-score of v [..., G] over its last axis."""
    v_bg = v_bg.astype(jnp.float32)
    finite_bg = jnp.isfinite(v_bg)
    safe_bg = jnp.where(finite_bg, v_bg, 0.0)
    n_b1 = jnp.sum(finite_bg.astype(jnp.float32), axis=-1, keepdims=True)
    judged_b1 = n_b1 == v_bg.shape[-1]
    denom_b1 = jnp.maximum(n_b1, 1.0)
    # Shifting by the first value makes a constant group's deviations exactly zero in float32.
    # Taken as a masked sum (exact: one nonzero term) since Pallas' Triton lowering has no slice.
    first_bg = jax.lax.broadcasted_iota(jnp.int32, v_bg.shape, v_bg.ndim - 1) == 0
    shift_b1 = jnp.sum(jnp.where(first_bg, safe_bg, 0.0), axis=-1, keepdims=True)
    d_bg = jnp.where(finite_bg, safe_bg - shift_b1, 0.0)
    mean_d_b1 = jnp.sum(d_bg, axis=-1, keepdims=True) / denom_b1
    dev_bg = jnp.where(finite_bg, d_bg - mean_d_b1, 0.0)
    std_b1 = jnp.sqrt(jnp.sum(dev_bg * dev_bg, axis=-1, keepdims=True) / denom_b1)
    mean_abs_b1 = jnp.sum(jnp.abs(safe_bg), axis=-1, keepdims=True) / denom_b1
    flat_b1 = (std_b1 <= CONSTANT_RTOL * jnp.maximum(1.0, mean_abs_b1)) | (n_b1 < 2.0)
    constant_b1 = judged_b1 & flat_b1
    zero_b1 = constant_b1 | ~judged_b1
    z_bg = jnp.where(zero_b1, 0.0, dev_bg / (std_b1 + EPS))
    mean_b1 = jnp.where(n_b1 > 0.0, shift_b1 + mean_d_b1, jnp.nan)
    return GroupStats(
        z_bg=z_bg,
        constant_b=constant_b1[..., 0],
        judged_b=judged_b1[..., 0],
        mean_b=mean_b1[..., 0],
        std_b=std_b1[..., 0],
    )


def group_zscore(v_bg: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(z_bg float32 [..., G], degenerate_b bool [...]): z_G(v) and where it is 0 for the whole
    group (constant, fewer than 2 finite values, or not judged)."""
    stats = group_stats(v_bg)
    return stats.z_bg, stats.constant_b | ~stats.judged_b
