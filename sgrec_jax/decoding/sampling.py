"""Constrained ancestral sampling: the other RL rollout mode (beam search being the first).

Each of G samples per request draws its L tokens in order from the model's next-token
distribution at `temperature`, restricted to the allowed tokens of its trie node and
renormalised, so every sample is a catalog item; samples of a request may repeat items.

The reported log-prob is the policy's own, at temperature 1 (`masked_log_softmax` of the raw
logits), whatever temperature drew the sample: it is what pi_old must score and what
`constrained_logprob` gives for the same codes. The decoder runs incrementally
(`decode_step`, one position per sample and level, keys and values cached); levels are a static
loop unrolled in the jit, since level 0 scores one shared prefix and later levels G.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sgrec_jax.decoding.logprob import SidPolicy, encode_requests, masked_log_softmax
from sgrec_jax.sid.catalog import Catalog, allowed_mask, item_of_leaf, next_node


class SampleResult(NamedTuple):
    """G sampled items per request.

    Attributes:
      items_bg: int32 [B, G] item indices (always catalog items).
      codes_bgl: int32 [B, G, L] their SIDs.
      logprob_bg: float32 [B, G] log-prob under the constrained policy at temperature 1.
    """

    items_bg: jax.Array
    codes_bgl: jax.Array
    logprob_bg: jax.Array


def constrained_sample(
    model: SidPolicy,
    catalog: Catalog,
    history_bh: jax.Array,
    history_mask_bh: jax.Array,
    rng: jax.Array,
    *,
    num_samples: int,
    temperature: float,
    leave_out_b: jax.Array | None = None,
) -> SampleResult:
    """G = num_samples samples per request; traceable (see `constrained_sample_jit`).

    Args:
      model: the generator (`SidPolicy`); its logits' width must be catalog.vocab_size.
      catalog: the SID trie.
      history_bh, history_mask_bh: int32 item histories [B, H] and their bool mask.
      rng: PRNG key; the same key gives the same samples.
      num_samples: G (static).
      temperature: > 0 (static); divides the logits before sampling; near 0 every sample is the
        constrained greedy item (beam size 1).
      leave_out_b: int32 [B] the requests' own targets when they are training examples (RL
        rollouts; `logprob.encode_requests`), else None.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, g, v, levels = history_bh.shape[0], num_samples, catalog.vocab_size, catalog.num_levels
    memory = encode_requests(model, history_bh, history_mask_bh, leave_out_b)
    codes_bgl = jnp.zeros((b, g, levels), jnp.int32)
    node_n = jnp.zeros(b * g, jnp.int32)
    logprob_bg = jnp.zeros((b, g), jnp.float32)
    # All samples share the empty prefix: score it once per request, then widen the cache.
    cache = model.start_decoding(memory, 1)
    for level, key in enumerate(jax.random.split(rng, levels)):
        prefix_bgl = codes_bgl[:, :1] if level == 0 else codes_bgl
        logits_bgv, cache = model.decode_step(memory, cache, prefix_bgl, level)
        if level == 0:
            cache = jax.tree.map(lambda x: jnp.repeat(x, g, axis=1), cache)
        if logits_bgv.shape[-1] != v:
            raise ValueError(
                f"the model's level-{level} logits have width {logits_bgv.shape[-1]}, "
                f"the catalog's vocabulary is {v}"
            )
        logits_bgv = jnp.broadcast_to(logits_bgv, (b, g, v)).astype(jnp.float32)
        mask_bgv = allowed_mask(catalog, level, node_n).reshape(b, g, v)
        token_bg = jax.random.categorical(
            key, jnp.where(mask_bgv, logits_bgv / temperature, -jnp.inf), axis=-1
        ).astype(jnp.int32)
        logp_bgv = masked_log_softmax(logits_bgv, mask_bgv)
        logprob_bg += jnp.take_along_axis(logp_bgv, token_bg[:, :, None], axis=-1)[:, :, 0]
        codes_bgl = codes_bgl.at[:, :, level].set(token_bg)
        node_n = next_node(catalog, level, node_n, token_bg.reshape(-1))
    items_bg = item_of_leaf(catalog, node_n).reshape(b, g)
    return SampleResult(items_bg, codes_bgl, logprob_bg)


constrained_sample_jit = nnx.jit(
    constrained_sample, static_argnames=("num_samples", "temperature")
)
