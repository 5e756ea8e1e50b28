"""PSJ stage 2: the user-conditional aggregator w(x), trained by pairwise GRPO.

The policy maps user-context features x (judge.context) to logits [A, 5] over the importance
levels 0..4 of each aspect. Training (algorithms.md sections 3 and 5), per preference pair
a_i > a_j with evidence s(a_i), s(a_j):

  1. sample G level vectors l_g ~ pi_old(. | x) (pi_old = the current policy, frozen for the
     batch), weights w_g = l_g / sum l_g (all zero -> uniform);
  2. reward r_g = 1[s_hol(a_i; w_g) > s_hol(a_j; w_g)], on the aspects present for both items
     (holistic.py renormalises the weights over them);
  3. advantage A_g = z_G(r)_g, the robust group z-score of core.group_stats (0 for a constant
     group), the same function the generator's RL uses;
  4. `updates_per_batch` clipped policy-gradient steps on
     J = mean_{pairs, g} 1/A sum_a min(rho_ga A_g, clip(rho_ga, 1 - eps, 1 + eps) A_g),
     rho_ga = pi(l_ga | x) / pi_old(l_ga | x): the A aspects are the "tokens" of the sampled
     action. There is no reference policy for the aggregator, so the KL term is absent (beta = 0).

Inference uses the expected weights w_a = E[l_a] / sum_b E[l_b] (holistic.expected_weights).
The output layer starts at zero, so the untrained policy is uniform over levels and its expected
weights are uniform: training starts from the uniform-weight baseline.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sgrec_jax.core.group_stats import group_zscore
from sgrec_jax.core.policy_gradient import clipped_objective
from sgrec_jax.judge.aspects import NUM_ASPECTS
from sgrec_jax.judge.fitting import FitOptions, fit
from sgrec_jax.judge.holistic import (
    NUM_LEVELS,
    comparable_pairs,
    expected_weights,
    level_weights,
    pair_margin,
)


class AspectPolicy(nnx.Module):
    """x [B, F] -> logits [B, A, NUM_LEVELS]: LayerNorm, one GELU hidden layer, zero-init head."""

    def __init__(self, in_dim: int, *, num_aspects: int = NUM_ASPECTS, hidden: int = 64,
                 rngs: nnx.Rngs):
        self.num_aspects = num_aspects
        self.norm = nnx.LayerNorm(in_dim, rngs=rngs)
        self.hidden = nnx.Linear(in_dim, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, num_aspects * NUM_LEVELS,
                               kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x_bf: jax.Array) -> jax.Array:
        h = jax.nn.gelu(self.hidden(self.norm(x_bf)))
        return self.head(h).reshape(x_bf.shape[0], self.num_aspects, NUM_LEVELS)

    def weights(self, x_bf: jax.Array) -> jax.Array:
        """float32 [B, A] expected weights on the simplex."""
        return expected_weights(self(x_bf))


def _aspect_logprobs(logits_bal: jax.Array, levels_bga: jax.Array) -> jax.Array:
    """float32 [B, G, A] log pi(l_ga | x)."""
    logp_bal = jax.nn.log_softmax(logits_bal.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp_bal[:, None], levels_bga[..., None], axis=-1)[..., 0]


def sample_group(
    logits_bal: jax.Array, ev_i_ba: jax.Array, ev_j_ba: jax.Array, rng: jax.Array, group_size: int
) -> dict[str, jax.Array]:
    """One GRPO rollout per pair: levels [B,G,A], logp_old [B,G,A], reward and advantage [B,G]."""
    b, a, num_levels = logits_bal.shape
    levels_bga = jax.random.categorical(rng, logits_bal[:, None], axis=-1,
                                        shape=(b, group_size, a))
    margin_bg = pair_margin(level_weights(levels_bga), ev_i_ba[:, None], ev_j_ba[:, None])
    reward_bg = jnp.where(jnp.isfinite(margin_bg), (margin_bg > 0).astype(jnp.float32), jnp.nan)
    return {
        "levels": levels_bga.astype(jnp.int32),
        "logp_old": jax.lax.stop_gradient(_aspect_logprobs(logits_bal, levels_bga)),
        "reward": reward_bg,
        "advantage": group_zscore(reward_bg)[0],
    }


def grpo_loss(model: AspectPolicy, batch: dict[str, jax.Array], clip_eps: float
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-J, the clipped surrogate (per-aspect ratios), and the clip fraction."""
    logp_bga = _aspect_logprobs(model(batch["x"]), batch["levels"])
    terms = clipped_objective(logp_bga, batch["logp_old"], batch["advantage"][..., None], clip_eps)
    return -terms.objective.mean(), {"clip_frac": terms.binds.mean()}


@dataclasses.dataclass(frozen=True)
class GrpoOptions:
    """Pairwise GRPO settings; `fit` holds the loop's (batches, batch size, updates, lr)."""

    group_size: int = 16
    clip_eps: float = 0.2
    hidden: int = 64
    fit: FitOptions = FitOptions(num_batches=300, batch_size=256, updates_per_batch=2,
                                 learning_rate=3e-3)


def train_aggregator(
    x_nf: np.ndarray, ev_i_na: np.ndarray, ev_j_na: np.ndarray, options: GrpoOptions, seed: int,
    mesh: Mesh | None = None,
) -> tuple[AspectPolicy, list[dict[str, float]]]:
    """Trains the policy on pairs (x, s(a_i), s(a_j)), a_i preferred; returns it and the log.

    Pairs with no jointly present aspect carry no reward and are dropped first. mesh: where to
    train (judge.fitting.fit; None = one device).
    """
    arrays = comparable_pairs(x_nf, ev_i_na, ev_j_na)
    model = AspectPolicy(arrays["x"].shape[1], num_aspects=arrays["ev_i"].shape[1],
                         hidden=options.hidden, rngs=nnx.Rngs(seed))

    def prepare(policy, batch, rng):
        rollout = sample_group(policy(batch["x"]), batch["ev_i"], batch["ev_j"], rng,
                               options.group_size)
        stats = {"reward_mean": jnp.nanmean(rollout.pop("reward")),
                 "zero_std_frac": (jnp.abs(rollout["advantage"]).max(axis=1) == 0).mean()}
        return {"x": batch["x"], **rollout}, stats

    def loss_fn(policy, batch, rng):
        del rng  # the rollout already sampled
        return grpo_loss(policy, batch, options.clip_eps)

    return fit(model, loss_fn, arrays, options.fit, seed, prepare=prepare, mesh=mesh)
