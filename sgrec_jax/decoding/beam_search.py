"""Constrained beam search over the catalog trie: the top items of the constrained policy.

One jitted call serves evaluation (beam >= K for a full top-K ranking) and RL rollouts (beam = G
gives G distinct items). Per request the history is encoded once; then, for each level, the
model scores every beam's prefix, the scores are renormalised over the allowed next tokens of
each beam's trie node (`masked_log_softmax`, the policy's own log-prob), added to the beam's
log-prob, and the best continuations over (beams x V) become the next beams.

Level 0 expands the root alone; levels 1..L-1 are one `lax.scan` with a fixed width
W = min(beam_size, catalog size), so the loop compiles once whatever L is. The model decodes
incrementally (`decode_step`): each level runs one new decoder position per beam and reads the
earlier ones from a key/value cache that is reordered with the beams, so a level costs one
position per beam rather than the whole prefix. While a level has fewer trie nodes than W, the
surplus beams are dead (log-prob -inf) and every live continuation outranks them, so all
prefixes are kept: the search is exact whenever beam_size >= the catalog size. Beams end at
distinct leaves, i.e. distinct items; dead beams end as padding (-1).

`level_scoring` chooses how a level's logits score the allowed tokens: "renormalized" (the
default, above: a softmax over the allowed codes only, so a node with one child costs nothing)
or "full_softmax" (a softmax over the level's whole codebook, then the disallowed codes masked
out, as HF `generate` with `prefix_allowed_tokens_fn` decodes TIGER): probability the model puts
on codes that lead to no item is lost, so an item whose prefix the model doubts pays for it at
every level. Both rank the same way at a single level; they differ in how levels combine.

The same call also decodes the unconstrained greedy SID (argmax per level, no masks) and reports
whether it falls outside the catalog: the constrained valid rate is 1 by construction and says
nothing; this rate says how much the constraint does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sgrec_jax.decoding.logprob import SidPolicy, encode_requests, masked_log_softmax
from sgrec_jax.sid.catalog import Catalog, allowed_mask, item_of_leaf, item_of_sid, next_node


class BeamResult(NamedTuple):
    """The best `num_return` items per request, best first.

    Attributes:
      items_bk: int32 [B, R] item indices; -1 where the catalog has fewer than R items.
      codes_bkl: int32 [B, R, L] their SIDs; -1 at padded entries.
      logprob_bk: float32 [B, R] log-prob under the constrained policy (equal to
        `constrained_logprob` of the codes up to float rounding; with "full_softmax" level
        scoring, the sum of the unrenormalised level log-probs); -inf at padded entries.
      argmax_invalid_b: bool [B] True if the unconstrained greedy SID is not a catalog item.
    """

    items_bk: jax.Array
    codes_bkl: jax.Array
    logprob_bk: jax.Array
    argmax_invalid_b: jax.Array


def _check_logits(logits_bkv: jax.Array, catalog: Catalog, level: int) -> None:
    if logits_bkv.shape[-1] != catalog.vocab_size:
        raise ValueError(
            f"the model's level-{level} logits have width {logits_bkv.shape[-1]}, "
            f"the catalog's vocabulary is {catalog.vocab_size}"
        )


LEVEL_SCORINGS = ("renormalized", "full_softmax")


def level_log_probs(logits_xv: jax.Array, mask_xv: jax.Array, scoring: str) -> jax.Array:
    """float32 [..., V] log-probs of the allowed tokens (-inf elsewhere) under `scoring`."""
    if scoring == "renormalized":
        return masked_log_softmax(logits_xv, mask_xv)
    if scoring == "full_softmax":
        return jnp.where(mask_xv, jax.nn.log_softmax(logits_xv.astype(jnp.float32)), -jnp.inf)
    raise ValueError(f"level_scoring must be one of {', '.join(LEVEL_SCORINGS)}, got {scoring!r}")


def unconstrained_argmax_invalid(
    model: SidPolicy, memory: Any, catalog: Catalog, batch_size: int
) -> jax.Array:
    """bool [B]: the greedy SID decoded with no masks (argmax per level) is not in the catalog."""
    codes_b1l = jnp.zeros((batch_size, 1, catalog.num_levels), jnp.int32)
    for level in range(catalog.num_levels):
        logits_b1v = model.decode_logits(memory, codes_b1l, level)
        _check_logits(logits_b1v, catalog, level)
        token_b1 = jnp.argmax(logits_b1v, axis=-1).astype(jnp.int32)
        codes_b1l = codes_b1l.at[:, :, level].set(token_b1)
    return item_of_sid(catalog, codes_b1l[:, 0]) < 0


def constrained_beam_search(
    model: SidPolicy,
    catalog: Catalog,
    history_bh: jax.Array,
    history_mask_bh: jax.Array,
    *,
    beam_size: int,
    num_return: int | None = None,
    level_scoring: str = "renormalized",
    leave_out_b: jax.Array | None = None,
) -> BeamResult:
    """Beam search of the constrained policy; traceable (see `constrained_beam_search_jit`).

    Args:
      model: the generator (`SidPolicy`); its logits' width must be catalog.vocab_size.
      catalog: the SID trie (a pytree; `jax.device_put` it once).
      history_bh, history_mask_bh: int32 item histories [B, H] and their bool mask.
      beam_size: beams kept per level (static).
      num_return: items returned per request, <= beam_size; defaults to beam_size.
      level_scoring: "renormalized" or "full_softmax" (static; see the module docstring).
      leave_out_b: int32 [B] the requests' own targets when they are training examples (RL
        rollouts; `logprob.encode_requests`), else None.
    """
    if level_scoring not in LEVEL_SCORINGS:
        raise ValueError(
            f"level_scoring must be one of {', '.join(LEVEL_SCORINGS)}, got {level_scoring!r}"
        )
    num_return = beam_size if num_return is None else num_return
    if beam_size < 1 or not 1 <= num_return <= beam_size:
        raise ValueError(f"need 1 <= num_return <= beam_size, got {num_return}, {beam_size}")
    b, v, levels = history_bh.shape[0], catalog.vocab_size, catalog.num_levels
    memory = encode_requests(model, history_bh, history_mask_bh, leave_out_b)
    # Level 0 expands the root alone; every later level keeps `width` beams. Beams that the
    # level's nodes cannot fill (fewer nodes than width) are dead: score -inf, so every
    # continuation of a real beam outranks them, and they end as padding.
    width = min(beam_size, catalog.num_items)
    codes_bkl = jnp.zeros((b, 1, levels), jnp.int32)
    cache = model.start_decoding(memory, 1)
    logits_b1v, cache = model.decode_step(memory, cache, codes_bkl, 0)
    _check_logits(logits_b1v, catalog, 0)
    mask_bv = allowed_mask(catalog, 0, jnp.zeros(b, jnp.int32))
    first = min(width, catalog.num_nodes[1])
    score_bk, token_bk = jax.lax.top_k(
        level_log_probs(logits_b1v[:, 0], mask_bv, level_scoring), first
    )
    score_bk = jnp.pad(score_bk, ((0, 0), (0, width - first)), constant_values=-jnp.inf)
    token_bk = jnp.pad(token_bk.astype(jnp.int32), ((0, 0), (0, width - first)))
    node_bk = next_node(catalog, 0, jnp.zeros(b * width, jnp.int32), token_bk.reshape(-1))
    node_bk = jnp.where(jnp.isfinite(score_bk), node_bk.reshape(b, width), 0)
    codes_bkl = jnp.zeros((b, width, levels), jnp.int32).at[:, :, 0].set(token_bk)
    cache = jax.tree.map(lambda x: jnp.repeat(x, width, axis=1), cache)

    def expand(carry, level):
        score_bk, node_bk, codes_bkl, cache = carry
        logits_bkv, cache = model.decode_step(memory, cache, codes_bkl, level)
        mask_bkv = allowed_mask(catalog, level, node_bk.reshape(-1)).reshape(b, width, v)
        cand_bkv = score_bk[:, :, None] + level_log_probs(logits_bkv, mask_bkv, level_scoring)
        score_bk, flat_bk = jax.lax.top_k(cand_bkv.reshape(b, width * v), width)
        parent_bk, token_bk = flat_bk // v, (flat_bk % v).astype(jnp.int32)
        codes_bkl = jnp.take_along_axis(codes_bkl, parent_bk[:, :, None], axis=1)
        codes_bkl = jax.lax.dynamic_update_index_in_dim(codes_bkl, token_bk, level, axis=2)
        parent_node_n = jnp.take_along_axis(node_bk, parent_bk, axis=1).reshape(-1)
        node_bk = next_node(catalog, level, parent_node_n, token_bk.reshape(-1)).reshape(b, width)
        node_bk = jnp.where(jnp.isfinite(score_bk), node_bk, 0)  # dead beams sit at node 0
        cache = jax.tree.map(
            lambda x: jnp.take_along_axis(
                x, parent_bk.reshape(b, width, *([1] * (x.ndim - 2))), axis=1
            ),
            cache,
        )
        return (score_bk, node_bk, codes_bkl, cache), None

    if levels > 1:
        carry = (score_bk, node_bk, codes_bkl, cache)
        (score_bk, node_bk, codes_bkl, _), _ = jax.lax.scan(
            expand, carry, jnp.arange(1, levels, dtype=jnp.int32)
        )
    alive_bk = jnp.isfinite(score_bk)
    items_bk = jnp.where(alive_bk, item_of_leaf(catalog, node_bk.reshape(-1)).reshape(b, -1), -1)
    codes_bkl = jnp.where(alive_bk[:, :, None], codes_bkl, -1)
    pad = num_return - items_bk.shape[1]
    if pad > 0:  # the catalog has fewer items than num_return
        items_bk = jnp.pad(items_bk, ((0, 0), (0, pad)), constant_values=-1)
        codes_bkl = jnp.pad(codes_bkl, ((0, 0), (0, pad), (0, 0)), constant_values=-1)
        score_bk = jnp.pad(score_bk, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    return BeamResult(
        items_bk=items_bk[:, :num_return],
        codes_bkl=codes_bkl[:, :num_return],
        logprob_bk=score_bk[:, :num_return],
        argmax_invalid_b=unconstrained_argmax_invalid(model, memory, catalog, b),
    )


# Compiled once per (model structure, catalog sizes, input shapes, beam_size, num_return); NNX
# modules and plain pytree models both pass as arguments.
constrained_beam_search_jit = nnx.jit(
    constrained_beam_search, static_argnames=("beam_size", "num_return", "level_scoring")
)
