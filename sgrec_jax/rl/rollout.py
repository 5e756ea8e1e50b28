"""RL rollouts: G candidate items per request from the current policy, and their scores.

    codes_bgl = generate(policy, catalog, history_bh, mask_bh, rng, mode="beam", group_size=16,
                         temperature=1.0).codes_bgl
    old = score_group(policy, catalog, history_bh, mask_bh, codes_bgl)      # pi_old
    ref = score_group(reference, catalog, history_bh, mask_bh, codes_bgl)   # pi_ref

Two modes: "beam" (constrained beam search with beam = G: the G best distinct items, as
MiniOneRec does; deterministic) and "sample" (constrained ancestral sampling at a temperature;
items may repeat within a group). Scoring is the one function pi, pi_old and pi_ref share
(`decoding.constrained_log_softmax` of teacher-forced logits): each request's history is encoded
once and its G candidates are scored together against that memory, never from beam scores.
RL requests are training examples: their `leave_out_b` (the requests' targets) keeps a
transition memory from showing each request its own transition, for the rollout and every
scoring alike (`logprob.encode_requests`). Everything here is traceable and vectorised over
requests and candidates. `with_target` puts each request's logged target into its group where
the rollout missed it (rl.target_in_group).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sgrec_jax.decoding.beam_search import constrained_beam_search
from sgrec_jax.decoding.logprob import (
    SidPolicy,
    constrained_log_softmax,
    encode_requests,
    log_softmax_entropy,
    token_logprob,
)
from sgrec_jax.decoding.sampling import constrained_sample
from sgrec_jax.sid.catalog import Catalog

ROLLOUT_MODES = ("beam", "sample")


class Group(NamedTuple):
    """G candidates per request.

    Attributes:
      items_bg: int32 [B, G] item indices (-1 only if beam search found fewer than G items).
      codes_bgl: int32 [B, G, L] their SIDs.
    """

    items_bg: jax.Array
    codes_bgl: jax.Array


class GroupScore(NamedTuple):
    """A policy's view of a group.

    Attributes:
      token_logprob_bgl: float32 [B, G, L] per-token log-prob under the constrained policy.
      entropy_bgl: float32 [B, G, L] entropy of the constrained next-token distribution after
        each candidate's own prefix.
      logp_bglv: float32 [B, G, L, V] those distributions themselves (log-probs over the allowed
        codes, -inf elsewhere), for the exact KL to the reference.
    """

    token_logprob_bgl: jax.Array
    entropy_bgl: jax.Array
    logp_bglv: jax.Array

    @property
    def logprob_bg(self) -> jax.Array:
        """float32 [B, G] item log-probs (sum over the L tokens)."""
        return self.token_logprob_bgl.sum(-1)


def generate(
    model: SidPolicy,
    catalog: Catalog,
    history_bh: jax.Array,
    history_mask_bh: jax.Array,
    rng: jax.Array,
    *,
    mode: str,
    group_size: int,
    temperature: float,
    leave_out_b: jax.Array | None = None,
) -> Group:
    """G = group_size candidates per request from `model` (mode and sizes static).

    `rng` drives sampling only; beam rollouts are deterministic. `temperature` applies to
    sampling only. `leave_out_b`: the requests' targets when they are training examples.
    """
    if mode == "beam":
        result = constrained_beam_search(
            model, catalog, history_bh, history_mask_bh, beam_size=group_size,
            leave_out_b=leave_out_b,
        )
        return Group(result.items_bk, result.codes_bkl)
    if mode == "sample":
        result = constrained_sample(
            model, catalog, history_bh, history_mask_bh, rng, num_samples=group_size,
            temperature=temperature, leave_out_b=leave_out_b,
        )
        return Group(result.items_bg, result.codes_bgl)
    raise ValueError(f"rollout mode {mode!r} is not one of {', '.join(ROLLOUT_MODES)}")


def with_target(group: Group, target_b: jax.Array, target_codes_bl: jax.Array) -> Group:
    """The group with each request's logged target in it: where the rollout missed the target,
    it takes the place of the last candidate (the lowest beam, or the last sample).

    Off-policy guidance for target-matching rewards ("hit", "rank"): a group without its target
    has a constant reward and teaches nothing, and 35-97% of beam groups had none on the public
    data (docs/results.md). With the target in, every group contrasts the logged next item with
    the policy's own top candidates, as LUFFY mixes demonstrations into GRPO groups. Groups that
    hold the target already are returned unchanged.

    Args:
      group: the rollout, items_bg [B, G] and codes_bgl [B, G, L].
      target_b: int32 [B] the requests' logged next items.
      target_codes_bl: int32 [B, L] their SIDs.
    """
    missed_b1 = ~in_group_b(group.items_bg, target_b)[:, None]
    last_g = jnp.arange(group.items_bg.shape[1]) == group.items_bg.shape[1] - 1
    replace_bg = missed_b1 & last_g
    items_bg = jnp.where(replace_bg, target_b[:, None], group.items_bg)
    codes_bgl = jnp.where(replace_bg[..., None], target_codes_bl[:, None, :], group.codes_bgl)
    return Group(items_bg, codes_bgl.astype(group.codes_bgl.dtype))


def in_group_b(items_bg: jax.Array, target_b: jax.Array) -> jax.Array:
    """bool [B]: whether each request's target is among its G candidates."""
    return (items_bg == target_b[:, None]).any(axis=-1)


def score_group(
    model: SidPolicy,
    catalog: Catalog,
    history_bh: jax.Array,
    history_mask_bh: jax.Array,
    codes_bgl: jax.Array,
    leave_out_b: jax.Array | None = None,
) -> GroupScore:
    """Per-token log-probs and entropies of G candidate SIDs per request under `model`.

    The history is encoded once per request and shared by its G candidates. Deterministic
    (no dropout), so scoring the same parameters twice gives the same numbers.
    `leave_out_b`: the requests' targets when they are training examples.
    """
    memory = encode_requests(model, history_bh, history_mask_bh, leave_out_b)
    return score_logits(model.sequence_logits(memory, codes_bgl), codes_bgl, catalog)


def score_logits(logits_bglv: jax.Array, codes_bgl: jax.Array, catalog: Catalog) -> GroupScore:
    """The GroupScore of G candidate SIDs per request from their teacher-forced logits
    [B, G, L, V] (`model.sequence_logits`), for callers that run the forward pass themselves."""
    logp_bglv = constrained_log_softmax(logits_bglv, codes_bgl, catalog)
    return GroupScore(token_logprob(logp_bglv, codes_bgl).token_logprob_bkl,
                      log_softmax_entropy(logp_bglv), logp_bglv)
