"""A distilled aspect scorer: (user context, item) -> [A] evidence, for what stage 1 did not judge.

Stage-1 evidence (an LLM store, or the feature backend) covers the (user, item) pairs it was run
on; RL samples other candidates. The scorer is a small MLP trained by MSE, on the aspects present,
to reproduce stage-1 evidence from what any request has: the context features x (judge.context)
and the candidate's unit-norm embedding e. Its input is [x, e, x[:D] * e]: the product of the
mean history embedding and e puts the profile cosine one linear layer away. Outputs pass a
sigmoid, so scores lie in [0, 1] like the evidence.

It sees the history only through x, so aspects that need more (novelty: the closest single history
item; future: the user's later items) are learned as their expectation given x; `agreement`
reports how close that gets on held-out users.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from flax import nnx
from jax.sharding import Mesh

from sgrec_jax.data.split import PAD_ITEM
from sgrec_jax.judge.aspects import ASPECTS, NUM_ASPECTS
from sgrec_jax.judge.fitting import FitOptions, fit
from sgrec_jax.judge.holistic import holistic_score


class DistilledScorer(nnx.Module):
    """(x [B, F], e [B, D]) -> aspect scores [B, A] in [0, 1]."""

    def __init__(self, ctx_dim: int, emb_dim: int, *, num_aspects: int = NUM_ASPECTS,
                 hidden: int = 128, rngs: nnx.Rngs):
        self.emb_dim = emb_dim
        in_dim = ctx_dim + 2 * emb_dim
        self.norm = nnx.LayerNorm(in_dim, rngs=rngs)
        self.hidden1 = nnx.Linear(in_dim, hidden, rngs=rngs)
        self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, num_aspects, rngs=rngs)

    def __call__(self, x_bf: jax.Array, e_bd: jax.Array) -> jax.Array:
        cross_bd = x_bf[:, : self.emb_dim] * e_bd
        h = self.norm(jnp.concatenate([x_bf, e_bd, cross_bd], axis=-1))
        h = jax.nn.gelu(self.hidden2(jax.nn.gelu(self.hidden1(h))))
        return jax.nn.sigmoid(self.out(h))


def masked_mse(pred_ba: jax.Array, evidence_ba: jax.Array) -> jax.Array:
    """Mean squared error over the present (finite) evidence entries only."""
    present = jnp.isfinite(evidence_ba)
    err = jnp.where(present, pred_ba - jnp.where(present, evidence_ba, 0.0), 0.0)
    return (err ** 2).sum() / jnp.maximum(present.sum(), 1)


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    hidden: int = 128
    fit: FitOptions = FitOptions(num_batches=600, batch_size=512, learning_rate=3e-3)


def evidence_rows(
    x_nf: np.ndarray, item_i_n: np.ndarray, item_j_n: np.ndarray, ev_i_na: np.ndarray,
    ev_j_na: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both items of n pairs as 2n scorer rows: (x [2n, F], items [2n], evidence [2n, A])."""
    return (np.concatenate([x_nf, x_nf]), np.concatenate([item_i_n, item_j_n]),
            np.concatenate([ev_i_na, ev_j_na]))


def train_distilled(
    x_mf: np.ndarray, items_m: np.ndarray, evidence_ma: np.ndarray, emb_nd: np.ndarray,
    options: DistillOptions, seed: int, mesh: Mesh | None = None,
) -> tuple[DistilledScorer, list[dict[str, float]]]:
    """Fits the scorer on rows (context x, item index, stage-1 evidence); rows with no present
    aspect are dropped. emb_nd: the unit-norm item embeddings the context features use. mesh:
    where to train (judge.fitting.fit; None = one device)."""
    keep = np.isfinite(evidence_ma).any(axis=1)
    if not keep.any():
        raise ValueError("no row has any present evidence")
    arrays = {"x": np.asarray(x_mf, np.float32)[keep], "item": np.asarray(items_m, np.int32)[keep],
              "evidence": np.asarray(evidence_ma, np.float32)[keep]}
    emb = jnp.asarray(emb_nd, jnp.float32)
    model = DistilledScorer(arrays["x"].shape[1], emb.shape[1], num_aspects=evidence_ma.shape[1],
                            hidden=options.hidden, rngs=nnx.Rngs(seed))

    def loss_fn(scorer, batch, rng):
        del rng
        return masked_mse(scorer(batch["x"], emb[batch["item"]]), batch["evidence"]), {}

    return fit(model, loss_fn, arrays, options.fit, seed, mesh=mesh)


def distilled_aspects(
    scorer: DistilledScorer, x_bf: jax.Array, emb_nd: jax.Array, items_bg: jax.Array
) -> jax.Array:
    """float32 [B, G, A] scorer evidence of candidates items_bg (PAD_ITEM -> NaN), given the
    requests' context features x [B, F] and the item embeddings [N, D]; jittable."""
    b, g = items_bg.shape
    e_bgd = emb_nd[jnp.where(items_bg == PAD_ITEM, 0, items_bg)]
    x_bgf = jnp.broadcast_to(x_bf[:, None], (b, g, x_bf.shape[-1]))
    pred = scorer(x_bgf.reshape(b * g, -1), e_bgd.reshape(b * g, -1)).reshape(b, g, -1)
    return jnp.where((items_bg == PAD_ITEM)[..., None], jnp.nan, pred)


def predict_rows(scorer: DistilledScorer, x_mf: np.ndarray, items_m: np.ndarray,
                 emb_nd: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """float32 [m, A] scorer predictions for rows (x, item), in fixed-size batches."""
    emb = jnp.asarray(emb_nd, jnp.float32)
    fn = nnx.jit(lambda s, x, items: s(x, emb[items]))
    out = np.zeros((len(items_m), scorer.out.out_features), np.float32)
    for start in range(0, len(items_m), batch_size):
        stop = min(start + batch_size, len(items_m))
        x = np.zeros((batch_size, x_mf.shape[1]), np.float32)
        items = np.zeros(batch_size, np.int32)
        x[: stop - start], items[: stop - start] = x_mf[start:stop], items_m[start:stop]
        out[start:stop] = np.asarray(fn(scorer, jnp.asarray(x), jnp.asarray(items)))[
            : stop - start]
    return out


def agreement(pred_ma: np.ndarray, evidence_ma: np.ndarray,
              weights_ma: np.ndarray | None = None) -> dict[str, float]:
    """How well predictions match stage-1 evidence on the rows (present entries only).

    Returns "mae/<aspect>" (mean |pred - evidence| over rows where the aspect is present),
    "spearman/holistic" (rank correlation of s_hol from predictions vs from evidence, both on the
    aspects the evidence has, with weights_ma or uniform weights) and "rows".
    """
    pred_ma = np.asarray(pred_ma, np.float32)
    evidence_ma = np.asarray(evidence_ma, np.float32)
    present = np.isfinite(evidence_ma)
    out: dict[str, float] = {"rows": float(len(pred_ma))}
    for a, name in enumerate(ASPECTS[: evidence_ma.shape[1]]):
        col = present[:, a]
        out[f"mae/{name}"] = (float(np.abs(pred_ma[col, a] - evidence_ma[col, a]).mean())
                              if col.any() else float("nan"))
    if weights_ma is None:
        weights_ma = np.full(evidence_ma.shape, 1.0 / evidence_ma.shape[1], np.float32)
    hol_pred = np.asarray(holistic_score(jnp.asarray(weights_ma),
                                         jnp.where(present, pred_ma, jnp.nan)))
    hol_ev = np.asarray(holistic_score(jnp.asarray(weights_ma), jnp.asarray(evidence_ma)))
    ok = np.isfinite(hol_pred) & np.isfinite(hol_ev)
    out["spearman/holistic"] = (float(scipy.stats.spearmanr(hol_pred[ok], hol_ev[ok])[0])
                                if ok.sum() > 1 else float("nan"))
    return out
