"""How a candidate's advantage is spread over its SID levels (algorithms.md section 5b, "tree
credit"; config `rl.level_credit`).

"item": every level of candidate g gets the estimator's A[b, g] (plain GRPO).

"prefix_tree": level l of candidate g gets the change in expected advantage that its level-l code
caused within the group,

    A_l[b, g] = V(prefix_{<=l}(g)) - V(prefix_{<l}(g)),

V(p) = the mean of A[b, j] over the group's candidates j whose SID starts with p (V of the empty
prefix = the group mean). A level where the candidates sharing g's prefix do not diverge gets 0,
and the levels telescope: sum_l A_l[b, g] = A[b, g] - mean_j A[b, j] (the full prefix is g's own
SID, shared only by copies of g that sampling drew again, which carry A[b, g] too: rewards are
functions of the item). Candidates that are not items (item -1: beam search
found fewer than G) take no part in any mean and get 0 at every level.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LEVEL_CREDITS = ("item", "prefix_tree")


def prefix_tree_credit(
    advantage_bg: jax.Array, codes_bgl: jax.Array, valid_bg: jax.Array
) -> jax.Array:
    """float32 [B, G, L] per-level advantages A_l of "prefix_tree" credit (module docstring).

    Args:
      advantage_bg: float [B, G] the estimator's advantages (NaN propagates to the request's
        valid candidates, so a faulty batch stays non-finite).
      codes_bgl: int [B, G, L] the candidates' SIDs.
      valid_bg: bool [B, G] candidates that are items; the others are left out of every mean.
    """
    a_bg = jnp.where(valid_bg, advantage_bg.astype(jnp.float32), 0.0)
    # same_bgjl[b, g, j, l]: candidates g and j share their codes through level l.
    equal_bgjl = codes_bgl[:, :, None, :] == codes_bgl[:, None, :, :]
    same_bgjl = jnp.cumprod(equal_bgjl, axis=-1).astype(bool) & valid_bg[:, None, :, None]
    count_bgl = same_bgjl.sum(2)
    # V(prefix through level l) for l = 0..L-1, and V(empty prefix) = the group's mean.
    total_bgl = jnp.einsum("bgjl,bj->bgl", same_bgjl.astype(jnp.float32), a_bg,
                           precision=jax.lax.Precision.HIGHEST)
    value_bgl = total_bgl / jnp.maximum(count_bgl, 1)
    mean_b1 = a_bg.sum(-1, keepdims=True) / jnp.maximum(valid_bg.sum(-1, keepdims=True), 1)
    root_bg1 = jnp.broadcast_to(mean_b1, a_bg.shape)[..., None]
    before_bgl = jnp.concatenate([root_bg1, value_bgl[..., :-1]], axis=-1)
    return jnp.where(valid_bg[..., None], value_bgl - before_bgl, 0.0)


def level_advantage(
    credit: str, advantage_bg: jax.Array, codes_bgl: jax.Array, items_bg: jax.Array
) -> jax.Array:
    """float32 [B, G, 1] ("item") or [B, G, L] ("prefix_tree") advantages of the candidates'
    tokens; broadcasts against per-token log-probs [B, G, L]. `credit` is static."""
    if credit == "item":
        return advantage_bg.astype(jnp.float32)[..., None]
    if credit == "prefix_tree":
        return prefix_tree_credit(advantage_bg, codes_bgl, items_bg >= 0)
    raise ValueError(f"level_credit {credit!r} is not one of {', '.join(LEVEL_CREDITS)}")
