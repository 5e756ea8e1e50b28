"""Ground-truth channels of the synthetic world (data.synthetic): known only there.

Each request is scored at the user's true interest x_t when they chose the request's target
(`SyntheticWorld.interests_for_targets`), so a channel says how good a candidate would have been
at that moment:

  true_ctr:       sigmoid(ctr_scale x^T M s_i + quality_i + ctr_bias)   range [0, 1]
  true_business:  bid_i * true_ctr                                       range [0, max bid]
  true_relevance: (1 + cos(x, s_i)) / 2                                  range [0, 1]

Needs config.data.format == "synthetic" (the world is regenerated from config.data).

`oracle_front` traces the true Pareto front of top-k lists under two of these channels: for each
scalarisation weight w, every user's k items with the highest w r_a + (1 - w) r_b (each mapped to
[0, 1] by its declared range) over the whole catalog. The per-user means are linear in the list,
so these lists are exactly the supported points of the front any recommender could reach.

Jittable lookup of x_t: the host function searches the user's sequence for the target, so the
tables hold the same information as arrays: every user's sequence padded with PAD_ITEM
(sequences_ul [U, Lmax]), the interests of all interactions concatenated (interests_sd [S, D])
and each user's first row in it (offsets_u [U + 1]). The target's position t is the first match
of target_b in sequences_ul[user_b] (sequences never repeat an item), and
x = interests_sd[offsets_u[user] + t]. A target the user never chose has no interest: NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sgrec_jax.data.pipeline import eval_batches
from sgrec_jax.data.split import PAD_ITEM, Examples
from sgrec_jax.data.synthetic import SyntheticWorld
from sgrec_jax.rewards.channel import (
    RewardChannel,
    RewardRequests,
    RewardSetup,
    nan_where_padding,
    reward_tensor,
    safe_items,
)


def world_tables(world: SyntheticWorld) -> dict[str, jax.Array]:
    """The arrays the truth channels read (see module docstring)."""
    sequences = world.dataset.sequences
    sequences_ul = np.full((len(sequences), max(len(s) for s in sequences)), PAD_ITEM, np.int32)
    for u, seq in enumerate(sequences):
        sequences_ul[u, : len(seq)] = seq
    return {
        "item_vectors_nd": jnp.asarray(world.item_vectors),
        "click_matrix_dd": jnp.asarray(world.click_matrix),
        "quality_n": jnp.asarray(world.item_quality),
        "bids_n": jnp.asarray(world.bids),
        "ctr_scale": jnp.float32(world.config.ctr_scale),
        "ctr_bias": jnp.float32(world.config.ctr_bias),
        "sequences_ul": jnp.asarray(sequences_ul),
        "interests_sd": jnp.asarray(world.interests),
        "offsets_u": jnp.asarray(world.offsets, jnp.int32),
    }


def target_interest(tables: Mapping[str, jax.Array],
                    requests: RewardRequests) -> tuple[jax.Array, jax.Array]:
    """(x_bd float32 [B, D], found_b bool [B]): the interest with which each target was chosen."""
    match_bl = tables["sequences_ul"][requests.user_b] == requests.target_b[:, None]
    step_b = jnp.argmax(match_bl, axis=-1)
    x_bd = tables["interests_sd"][tables["offsets_u"][requests.user_b] + step_b]
    return x_bd, match_bl.any(axis=-1)


def _true_ctr_bg(tables: Mapping[str, jax.Array], x_bd: jax.Array,
                 items_bg: jax.Array) -> jax.Array:
    s_bgd = tables["item_vectors_nd"][items_bg]
    affinity_bg = jnp.einsum("bd,bgd->bg", x_bd @ tables["click_matrix_dd"], s_bgd)
    logit_bg = tables["ctr_scale"] * affinity_bg + tables["quality_n"][items_bg]
    return jax.nn.sigmoid(logit_bg + tables["ctr_bias"])


def _finish(r_bg: jax.Array, found_b: jax.Array, items_bg: jax.Array) -> jax.Array:
    return nan_where_padding(jnp.where(found_b[:, None], r_bg, jnp.nan), items_bg)


def _true_ctr_score(tables, requests: RewardRequests, items_bg: jax.Array,
                    logprob_bg: jax.Array) -> jax.Array:
    del logprob_bg
    x_bd, found_b = target_interest(tables, requests)
    return _finish(_true_ctr_bg(tables, x_bd, safe_items(items_bg)), found_b, items_bg)


def _true_business_score(tables, requests: RewardRequests, items_bg: jax.Array,
                         logprob_bg: jax.Array) -> jax.Array:
    del logprob_bg
    x_bd, found_b = target_interest(tables, requests)
    items = safe_items(items_bg)
    value_bg = tables["bids_n"][items] * _true_ctr_bg(tables, x_bd, items)
    return _finish(value_bg, found_b, items_bg)


def _true_relevance_score(tables, requests: RewardRequests, items_bg: jax.Array,
                          logprob_bg: jax.Array) -> jax.Array:
    del logprob_bg
    x_bd, found_b = target_interest(tables, requests)
    x_bd = x_bd / jnp.linalg.norm(x_bd, axis=-1, keepdims=True)
    cos_bg = jnp.einsum("bd,bgd->bg", x_bd, tables["item_vectors_nd"][safe_items(items_bg)])
    return _finish(jnp.clip((1.0 + cos_bg) / 2.0, 0.0, 1.0), found_b, items_bg)


def _world_of(setup: RewardSetup, name: str) -> SyntheticWorld:
    world = setup.world()
    if world is None:
        raise ValueError(f"reward channel {name!r} needs the synthetic world (data.format "
                         f"'synthetic'), got data.format {setup.config.data.format!r}")
    return world


def build_true_ctr(setup: RewardSetup, options: Mapping[str, Any]) -> RewardChannel:
    del options
    tables = world_tables(_world_of(setup, "true_ctr"))
    return RewardChannel("true_ctr", 0.0, 1.0, "truth", tables, _true_ctr_score)


def build_true_business(setup: RewardSetup, options: Mapping[str, Any]) -> RewardChannel:
    del options
    world = _world_of(setup, "true_business")
    return RewardChannel("true_business", 0.0, float(world.bids.max()), "truth",
                         world_tables(world), _true_business_score)


def build_true_relevance(setup: RewardSetup, options: Mapping[str, Any]) -> RewardChannel:
    del options
    tables = world_tables(_world_of(setup, "true_relevance"))
    return RewardChannel("true_relevance", 0.0, 1.0, "truth", tables, _true_relevance_score)


@jax.jit(static_argnames=("num_items", "k"))
def _oracle_batch(channels: tuple[RewardChannel, RewardChannel], requests: RewardRequests,
                  weights_w: jax.Array, num_items: int, k: int) -> jax.Array:
    """float32 [W, B, 2]: per weight and request, the mean raw rewards of the oracle top-k."""
    batch = requests.target_b.shape[0]
    items_bn = jnp.broadcast_to(jnp.arange(num_items, dtype=jnp.int32), (batch, num_items))
    rewards_bn2 = reward_tensor(channels, requests, items_bn, jnp.zeros(items_bn.shape))
    low_2 = jnp.array([c.low for c in channels])
    span_2 = jnp.array([c.high - c.low for c in channels])
    mapped_bn2 = (rewards_bn2 - low_2) / span_2
    score_wbn = (weights_w[:, None, None] * mapped_bn2[None, ..., 0]
                 + (1.0 - weights_w)[:, None, None] * mapped_bn2[None, ..., 1])
    _, top_wbk = jax.lax.top_k(jnp.nan_to_num(score_wbn, nan=-jnp.inf), k)
    picked_wbk2 = jnp.take_along_axis(rewards_bn2[None, :, :, None, :],
                                      top_wbk[..., None, None], axis=2)[:, :, :, 0, :]
    return picked_wbk2.mean(axis=2)


def oracle_front(channels: tuple[RewardChannel, RewardChannel], examples: Examples,
                 num_items: int, *, weights: np.ndarray, k: int = 10,
                 batch_size: int = 256) -> np.ndarray:
    """float64 [W, 2]: per weight w, the users' mean of the mean raw (channel a, channel b)
    rewards of their oracle top-k lists (module docstring); users a channel cannot score (NaN)
    are left out, as in the rl stage's reward@k."""
    if k > num_items:
        raise ValueError(f"oracle_front: k {k} exceeds the catalog's {num_items} items")
    weights_w = jnp.asarray(weights, jnp.float32)
    means = []
    for batch in eval_batches(examples, batch_size=batch_size):
        requests = RewardRequests.from_batch(batch)
        means_wb2 = np.asarray(_oracle_batch(tuple(channels), requests, weights_w,
                                             num_items=num_items, k=k))
        means.append(means_wb2[:, batch["valid"]])
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.concatenate(means, axis=1), axis=1).astype(np.float64)
