"""The Bradley-Terry baseline of the aggregator: simplex weights w(x) by logistic regression.

P(a_i > a_j | x) = sigmoid(beta * (s_hol(a_i; w(x)) - s_hol(a_j; w(x)))), w(x) = softmax(head(x)),
trained by the logistic loss on the logged preferences. beta (learned, > 0) only sets the
sharpness: margins of s_hol in [0, 1] are small, so a fixed beta = 1 would barely train. Missing
aspects are handled as in the aggregator (holistic.py: jointly present aspects, renormalised).
Cheaper than GRPO (one differentiable pass, no sampling), but it fits a likelihood, not PairAUC.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sgrec_jax.judge.aspects import NUM_ASPECTS
from sgrec_jax.judge.fitting import FitOptions, fit
from sgrec_jax.judge.holistic import comparable_pairs, pair_margin

INITIAL_BETA = 10.0


class BradleyTerryHead(nnx.Module):
    """x [B, F] -> weights [B, A] = softmax(MLP(x)); zero-init output, so it starts uniform."""

    def __init__(self, in_dim: int, *, num_aspects: int = NUM_ASPECTS, hidden: int = 64,
                 rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(in_dim, rngs=rngs)
        self.hidden = nnx.Linear(in_dim, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, num_aspects, kernel_init=nnx.initializers.zeros,
                               rngs=rngs)
        self.log_beta = nnx.Param(jnp.asarray(np.log(INITIAL_BETA), jnp.float32))

    def weights(self, x_bf: jax.Array) -> jax.Array:
        return jax.nn.softmax(self.head(jax.nn.gelu(self.hidden(self.norm(x_bf)))), axis=-1)

    def __call__(self, x_bf: jax.Array) -> jax.Array:
        return self.weights(x_bf)


def bt_loss(model: BradleyTerryHead, batch: dict[str, jax.Array]
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean -log sigmoid(beta * margin) over the batch, and the batch's pairwise accuracy."""
    margin_b = pair_margin(model.weights(batch["x"]), batch["ev_i"], batch["ev_j"])
    nll_b = -jax.nn.log_sigmoid(jnp.exp(model.log_beta[...]) * margin_b)
    return nll_b.mean(), {"accuracy": (margin_b > 0).mean(), "beta": jnp.exp(model.log_beta[...])}


@dataclasses.dataclass(frozen=True)
class BradleyTerryOptions:
    hidden: int = 64
    fit: FitOptions = FitOptions(num_batches=300, batch_size=256, learning_rate=3e-3)


def train_bradley_terry(
    x_nf: np.ndarray, ev_i_na: np.ndarray, ev_j_na: np.ndarray, options: BradleyTerryOptions,
    seed: int, mesh: Mesh | None = None,
) -> tuple[BradleyTerryHead, list[dict[str, float]]]:
    """Fits the head on pairs (x, s(a_i), s(a_j)), a_i preferred; comparable pairs only.

    mesh: where to train (judge.fitting.fit; None = one device)."""
    arrays = comparable_pairs(x_nf, ev_i_na, ev_j_na)
    model = BradleyTerryHead(arrays["x"].shape[1], num_aspects=arrays["ev_i"].shape[1],
                             hidden=options.hidden, rngs=nnx.Rngs(seed))
    return fit(model, lambda m, batch, rng: bt_loss(m, batch), arrays, options.fit, seed,
               mesh=mesh)
