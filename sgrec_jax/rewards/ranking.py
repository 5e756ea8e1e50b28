"""The target-matching business channels "hit" and "rank" (algorithms.md section 2).

hit:  1 if the candidate is the logged next item, else 0. Range [0, 1]. Needs nothing.
rank: MiniOneRec's ranking reward: hit, plus, only when the target is among the G candidates, a
      penalty -(1/log2(k+2)) / sum_{j<G} 1/log2(j+2) for a wrong candidate at position k
      (0-based), positions being the group sorted by logprob_bg, highest first (ties keep the
      group order, so beam order when logprobs come from a beam). Range [-1, 1]. Needs logprob_bg.

Both give a constant (zero-std) group whenever the target is not among the candidates, so they
are poor A2PO anchors at realistic hit rates (prefer "ecpm").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from sgrec_jax.rewards.channel import (
    RewardChannel,
    RewardRequests,
    RewardSetup,
    nan_where_padding,
)


def hit_bg(requests: RewardRequests, items_bg: jax.Array) -> jax.Array:
    """float32 [B, G]: 1 where the candidate is the target, else 0."""
    return (items_bg == requests.target_b[:, None]).astype(jnp.float32)


def positions_bg(logprob_bg: jax.Array) -> jax.Array:
    """int32 [B, G]: each candidate's 0-based position when sorted by logprob, highest first."""
    order_bg = jnp.argsort(-logprob_bg, axis=-1, stable=True)
    return jnp.argsort(order_bg, axis=-1, stable=True).astype(jnp.int32)


def rank_penalty_bg(requests: RewardRequests, items_bg: jax.Array,
                    logprob_bg: jax.Array) -> jax.Array:
    """float32 [B, G]: the penalty of wrong candidates in groups that contain the target."""
    g = items_bg.shape[-1]
    discount_g = 1.0 / jnp.log2(jnp.arange(g, dtype=jnp.float32) + 2.0)
    penalty_bg = -discount_g[positions_bg(logprob_bg)] / discount_g.sum()
    hit = hit_bg(requests, items_bg)
    in_group_b1 = hit.max(axis=-1, keepdims=True) > 0
    return jnp.where(in_group_b1 & (hit == 0), penalty_bg, 0.0)


def _hit_score(tables: Any, requests: RewardRequests, items_bg: jax.Array,
               logprob_bg: jax.Array) -> jax.Array:
    del tables, logprob_bg
    return nan_where_padding(hit_bg(requests, items_bg), items_bg)


def _rank_score(tables: Any, requests: RewardRequests, items_bg: jax.Array,
                logprob_bg: jax.Array) -> jax.Array:
    del tables
    reward_bg = hit_bg(requests, items_bg) + rank_penalty_bg(requests, items_bg, logprob_bg)
    return nan_where_padding(reward_bg, items_bg)


def build_hit(setup: RewardSetup, options: Mapping[str, Any]) -> RewardChannel:
    del setup, options
    return RewardChannel("hit", 0.0, 1.0, "business", {}, _hit_score)


def build_rank(setup: RewardSetup, options: Mapping[str, Any]) -> RewardChannel:
    del setup, options
    return RewardChannel("rank", -1.0, 1.0, "business", {}, _rank_score, reads_logprob=True)
