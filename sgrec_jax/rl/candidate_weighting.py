"""How much each candidate of a group counts in the policy gradient (config
`rl.candidate_weighting`).

"uniform": plain GRPO. Every candidate's term A_g grad log pi(g) counts 1/G. With sampled
rollouts that is a Monte-Carlo estimate of grad E_pi[A]; with beam rollouts it is not: the G
beams are the policy's top G, each counted once whatever its probability. For a reward that is
non-zero only on the target ("hit", "rank") a hit group's update is then

    grad log pi(t) - mean_g grad log pi(g),

the SFT gradient on the target plus a push of the beams towards a flat distribution among
themselves: the high-probability beams (popular items, in many groups) go down as much as the
beams that barely made the cut. On Beauty `single:rank` cut the share of popular items in the
top 10 from 0.35 to 0.23 and lost recall on the users whose target does not follow their last
item (docs/results.md, "Beauty, public-data RL setup").

"policy": each candidate counts by its share of the group's probability under the rollout
policy, w_g = pi_old(g) / sum_j pi_old(j) over the group's items, and the advantage is recentred
on the weighted mean,

    A'_g = G w_g (A_g - sum_j w_j A_j),

so that mean_g A'_g grad log pi(g) = grad E_{g ~ pi restricted to the group}[A(g)] at pi_old
exactly (the group renormalised: beams as an exhaustive enumeration of the policy's top, not
samples). For a hit reward it is w_t grad log(pi(t) / sum_j pi(j)): the likelihood of the target
among the beams, each beam pushed down in proportion to its probability, as softmax
cross-entropy does. Uniform w gives A_g - mean_j A_j: plain GRPO whenever the estimator's
advantages are centred. Candidates that are not items (item -1) get weight 0 and A' = 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

CANDIDATE_WEIGHTINGS = ("uniform", "policy")


def policy_weights(logprob_bg: jax.Array, valid_bg: jax.Array) -> jax.Array:
    """float32 [B, G] w = the rollout policy's probabilities renormalised over each group's
    valid candidates (0 elsewhere; all 0 in a group without one)."""
    logits_bg = jnp.where(valid_bg, logprob_bg.astype(jnp.float32), -jnp.inf)
    max_b1 = jnp.max(logits_bg, axis=-1, keepdims=True)
    max_b1 = jnp.where(jnp.isfinite(max_b1), max_b1, 0.0)
    p_bg = jnp.where(valid_bg, jnp.exp(logits_bg - max_b1), 0.0)
    total_b1 = p_bg.sum(-1, keepdims=True)
    return p_bg / jnp.where(total_b1 > 0, total_b1, 1.0)


def policy_weighted_advantage(
    advantage_bg: jax.Array, logprob_bg: jax.Array, valid_bg: jax.Array
) -> jax.Array:
    """float32 [B, G] A'_g = G w_g (A_g - sum_j w_j A_j) (module docstring).

    Args:
      advantage_bg: float [B, G] the estimator's advantages; NaN at a valid candidate makes
        its whole group NaN (a faulty batch stays non-finite).
      logprob_bg: float [B, G] the candidates' item log-probs under the rollout policy.
      valid_bg: bool [B, G] candidates that are items.
    """
    w_bg = jax.lax.stop_gradient(policy_weights(logprob_bg, valid_bg))
    a_bg = jnp.where(valid_bg, advantage_bg.astype(jnp.float32), 0.0)
    mean_b1 = (w_bg * a_bg).sum(-1, keepdims=True)
    group = advantage_bg.shape[-1]
    return jnp.where(valid_bg, group * w_bg * (a_bg - mean_b1), 0.0)


def candidate_advantage(
    weighting: str, advantage_bg: jax.Array, logprob_bg: jax.Array | None, items_bg: jax.Array
) -> jax.Array:
    """float32 [B, G] the advantages the update uses under `weighting` (static): "uniform"
    returns the estimator's unchanged; "policy" needs the rollout policy's item log-probs."""
    if weighting == "uniform":
        return advantage_bg.astype(jnp.float32)
    if weighting == "policy":
        if logprob_bg is None:
            raise ValueError('candidate_weighting "policy" needs the rollout policy\'s log-probs')
        return policy_weighted_advantage(advantage_bg, logprob_bg, items_bg >= 0)
    raise ValueError(f"candidate_weighting {weighting!r} is not one of "
                     f"{', '.join(CANDIDATE_WEIGHTINGS)}")
