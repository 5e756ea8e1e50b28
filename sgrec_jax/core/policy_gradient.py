"""The clipped policy-gradient objective, the k3 KL estimate and the exact KL between two
categorical distributions (algorithms.md sections 5 and 5b).

Shared by every policy this project trains with GRPO: the SID generator (rl/grpo.py, tokens =
SID levels) and the PSJ aggregator (judge/aggregator.py, tokens = aspects). Each equation lives
here once.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

LOG_RATIO_CLAMP = 10.0


class ClippedObjective(NamedTuple):
    """Per-token terms of the clipped surrogate (all float32, the tokens' shape).

    Attributes:
      objective: min(rho A, clip(rho, 1 - eps, 1 + eps) A).
      ratio: rho = pi / pi_old.
      binds: 1.0 where clipping binds (rho > 1 + eps with A > 0, or rho < 1 - eps with A < 0).
    """

    objective: jax.Array
    ratio: jax.Array
    binds: jax.Array


def clipped_objective(
    token_logprob: jax.Array, old_token_logprob: jax.Array, advantage: jax.Array, clip_eps: float
) -> ClippedObjective:
    """PPO's clipped surrogate per token; `advantage` broadcasts against the token log-probs."""
    ratio = jnp.exp(token_logprob.astype(jnp.float32) - old_token_logprob.astype(jnp.float32))
    advantage = advantage.astype(jnp.float32)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    objective = jnp.minimum(ratio * advantage, clipped * advantage)
    binds = ((ratio > 1.0 + clip_eps) & (advantage > 0)) | (
        (ratio < 1.0 - clip_eps) & (advantage < 0)
    )
    return ClippedObjective(objective, ratio, binds.astype(jnp.float32))


def k3_kl(token_logprob: jax.Array, ref_token_logprob: jax.Array) -> jax.Array:
    """float32 per-token k3 estimate of KL(pi || pi_ref): exp(log r) - log r - 1 >= 0, with
    log r = log pi_ref - log pi in float32 clamped to [-10, 10]."""
    log_r = ref_token_logprob.astype(jnp.float32) - token_logprob.astype(jnp.float32)
    log_r = jnp.clip(log_r, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return jnp.exp(log_r) - log_r - 1.0


def exact_kl(logp_xv: jax.Array, ref_logp_xv: jax.Array) -> jax.Array:
    """float32 [...] KL(pi || pi_ref) = sum_c pi(c) (log pi(c) - log pi_ref(c)) of categorical
    distributions given as log-probs over their last axis.

    Codes where pi's log-prob is -inf (off its support, e.g. off the catalog trie) contribute 0
    with zero gradient; a row with no support gives 0. The reference must cover pi's support
    (in RL both are renormalised over the same allowed codes).
    """
    support_xv = jnp.isfinite(logp_xv)
    logp_xv = jnp.where(support_xv, logp_xv.astype(jnp.float32), 0.0)
    ref_xv = jnp.where(support_xv, ref_logp_xv.astype(jnp.float32), 0.0)
    p_xv = jnp.where(support_xv, jnp.exp(logp_xv), 0.0)
    return (p_xv * (logp_xv - ref_xv)).sum(-1)
