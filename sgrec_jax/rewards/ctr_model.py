"""The pCTR model behind the eCPM channels: trained on logged clicks, calibrated, cached.

Public logs have clicks only (the next item) and no impressions, so the pCTR model learns
P(pair is a logged click | the pair is the logged next item or one of `num_negatives` items drawn
uniformly from the catalog): binary cross-entropy of the next item (label 1) against sampled
negatives (label 0). Its probabilities are calibrated for that 1 : num_negatives mix, not an
absolute click rate; eCPM = 1000 * bid * pCTR only needs them comparable across items and users.

Training: the leave-one-out TRAINING examples only (validation and test targets never leak),
by the shared supervised loop (`train.supervised.train_supervised`: AdamW, checkpoints, early
stopping on validation AUC over a fixed validation subset).
Calibration (Platt scaling): p = sigmoid(scale * logit + bias), the two scalars fitted by maximum
likelihood on all validation targets vs sampled negatives.
Report: AUC and expected calibration error (ECE, 15 equal-width bins) on the test targets vs
sampled negatives (calibrated, and the raw model's ECE for reference).

Architectures (CTR_ARCHITECTURES): "sasrec" (models.sasrec.SASRec: user_state + click_logits)
and "mean_pool" (MeanPoolScorer: an MLP over the mean of the history's item embeddings, no
attention, plus a per-item bias); the independent evaluation model uses the other one.

Cache: workdir/rewards/<channel>_seed<k>/ holds the checkpoints, options.json (the options it
was trained with: a different request for the same directory is an error, not a silent reuse)
and report.json (written last: calibration + metrics + best step). A build that finds report.json
restores the best checkpoint and trains nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize
import scipy.special
import scipy.stats
from absl import logging
from etils import epath
from flax import nnx
from ml_collections import ConfigDict

from sgrec_jax.core.files import read_json, write_json
from sgrec_jax.core.sharding import make_mesh
from sgrec_jax.data.split import PAD_ITEM, Examples, leave_one_out
from sgrec_jax.models.sasrec import NO_ITEM_LOGIT, SASRec
from sgrec_jax.rewards.channel import RewardSetup
from sgrec_jax.train.checkpointing import Checkpointer
from sgrec_jax.train.evaluate import subsample
from sgrec_jax.train.supervised import check_training_config, train_supervised
from sgrec_jax.train.train_state import create_train_state, make_optimizer

CTR_ARCHITECTURES = ("sasrec", "mean_pool")
OPTIONS_FILE = "options.json"
REPORT_FILE = "report.json"
ECE_BINS = 15
_EVAL_BATCH = 512
# Seeds of the fixed evaluation negatives, offset from the model seed per split.
_VALID_STREAM, _TEST_STREAM = 1, 2


@dataclasses.dataclass(frozen=True)
class CtrOptions:
    """How a pCTR model is built and trained (the eCPM channels' options: rewards/defaults.py
    restates these defaults for configs).

    Attributes:
      architecture: one of CTR_ARCHITECTURES.
      d_model: embedding / hidden width.
      num_layers, num_heads: SASRec blocks and heads (ignored by "mean_pool").
      dropout: dropout rate (SASRec: also on attention probabilities).
      num_negatives: uniform negatives per logged click, in training and evaluation.
      ctr_steps, batch_size, learning_rate, warmup_steps, weight_decay: the optimisation.
      eval_every, patience: validation AUC cadence and early stopping (0 = never stop early).
      valid_examples: size of the fixed validation subset used for early stopping (0 = all).
      seed_offset: added to the setup's seed; the model's seed names its cache directory.
    """

    architecture: str = "sasrec"
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    num_negatives: int = 4
    ctr_steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    eval_every: int = 500
    patience: int = 3
    valid_examples: int = 2000
    seed_offset: int = 0

    def __post_init__(self):
        if self.architecture not in CTR_ARCHITECTURES:
            raise ValueError(f"pCTR architecture must be one of {CTR_ARCHITECTURES}, got "
                             f"{self.architecture!r}")
        for name in ("d_model", "num_layers", "num_heads", "num_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed_offset < 0:
            raise ValueError(f"seed_offset must be >= 0, got {self.seed_offset}")
        check_training_config(self.training_config(), "pCTR options")

    def training_config(self) -> ConfigDict:
        """The supervised loop's settings (see train.supervised.train_supervised)."""
        return ConfigDict({
            "batch_size": self.batch_size, "num_steps": self.ctr_steps,
            "learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
            "weight_decay": self.weight_decay, "clip_norm": 1.0, "eval_every": self.eval_every,
            "patience": self.patience, "best_metric": "auc",
            "log_every": min(100, self.ctr_steps), "keep_checkpoints": 1,
            "max_steps_per_run": 0,
        })


class MeanPoolScorer(nnx.Module):
    """A no-attention pCTR scorer: user = mean history embedding + an MLP residual.

    Same interface as SASRec's pCTR use (user_state, click_logits), different inductive bias
    (order-free), so it errs differently from the reward's model.
    """

    def __init__(self, num_items: int, max_history: int, *, d_model: int, dropout: float,
                 rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.max_history = max_history
        self.dropout = dropout
        self.item_embed = nnx.Embed(num_items, d_model, embedding_init=init, rngs=rngs)
        self.mlp_in = nnx.Linear(d_model, 2 * d_model, kernel_init=init, rngs=rngs)
        self.mlp_out = nnx.Linear(2 * d_model, d_model, kernel_init=init, rngs=rngs)
        self.item_bias = nnx.Param(jnp.zeros((num_items,), jnp.float32))

    def user_state(self, history_bh: jax.Array, history_mask_bh: jax.Array, *,
                   deterministic: bool, rng: jax.Array | None = None) -> jax.Array:
        """float32 [B, d]."""
        if not deterministic and rng is None:
            raise ValueError("MeanPoolScorer needs an rng key for dropout unless deterministic")
        mask_bh1 = history_mask_bh[..., None].astype(jnp.float32)
        emb_bhd = self.item_embed(jnp.where(history_mask_bh, history_bh, 0)) * mask_bh1
        mean_bd = emb_bhd.sum(1) / jnp.maximum(mask_bh1.sum(1), 1.0)
        hidden_bf = jax.nn.gelu(self.mlp_in(mean_bd))
        if not deterministic and self.dropout > 0:
            keep = jax.random.bernoulli(rng, 1.0 - self.dropout, hidden_bf.shape)
            hidden_bf = jnp.where(keep, hidden_bf / (1.0 - self.dropout), 0.0)
        return mean_bd + self.mlp_out(hidden_bf)

    def click_logits(self, user_state_bd: jax.Array, items_bg: jax.Array) -> jax.Array:
        """float32 [B, G] (PAD_ITEM -> NO_ITEM_LOGIT)."""
        real_bg = items_bg != PAD_ITEM
        safe_bg = jnp.where(real_bg, items_bg, 0)
        logit_bg = jnp.einsum("bd,bgd->bg", user_state_bd, self.item_embed(safe_bg))
        return jnp.where(real_bg, logit_bg + self.item_bias[...][safe_bg], NO_ITEM_LOGIT)


def make_ctr_network(options: CtrOptions, num_items: int, max_history: int,
                     seed: int) -> nnx.Module:
    rngs = nnx.Rngs(seed)
    if options.architecture == "sasrec":
        return SASRec(num_items, max_history, d_model=options.d_model,
                      num_layers=options.num_layers, num_heads=options.num_heads,
                      d_ff=4 * options.d_model, dropout=options.dropout,
                      attention_dropout=options.dropout, rngs=rngs)
    return MeanPoolScorer(num_items, max_history, d_model=options.d_model,
                          dropout=options.dropout, rngs=rngs)


def bce_loss(model: nnx.Module, batch: Mapping[str, jax.Array], rng: jax.Array, *,
             num_items: int, num_negatives: int) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean BCE of the next item (label 1) vs uniform negatives (label 0); negatives that hit
    the target are dropped. A LossFn for train_state.make_train_step."""
    neg_rng, dropout_rng = jax.random.split(rng)
    target_b = batch["target"]
    negatives_bm = jax.random.randint(neg_rng, (target_b.shape[0], num_negatives), 0, num_items)
    items_bg = jnp.concatenate([target_b[:, None], negatives_bm], axis=1)
    labels_bg = jnp.zeros(items_bg.shape).at[:, 0].set(1.0)
    weight_bg = jnp.where((items_bg == target_b[:, None]) & (labels_bg == 0), 0.0, 1.0)
    state_bd = model.user_state(batch["history"], batch["history_mask"], deterministic=False,
                                rng=dropout_rng)
    logits_bg = model.click_logits(state_bd, items_bg)
    loss_bg = optax.sigmoid_binary_cross_entropy(logits_bg, labels_bg)
    return (loss_bg * weight_bg).sum() / weight_bg.sum(), {}


def pair_logits_bg(graphdef: nnx.GraphDef, state: nnx.State, history_bh: jax.Array,
                   history_mask_bh: jax.Array, items_bg: jax.Array) -> jax.Array:
    """float32 [B, G] raw pCTR logits of a model given as (graphdef, state); pure."""
    model = nnx.merge(graphdef, state)
    state_bd = model.user_state(history_bh, history_mask_bh, deterministic=True)
    return model.click_logits(state_bd, items_bg)


_pair_logits_jit = jax.jit(pair_logits_bg, static_argnums=0)


@dataclasses.dataclass(frozen=True)
class EvalPairs:
    """Targets vs fixed sampled negatives of one split: logits and labels, flattened."""

    logits: np.ndarray
    labels: np.ndarray


def score_pairs(model: nnx.Module, examples: Examples, num_items: int, num_negatives: int,
                seed: int) -> EvalPairs:
    """Raw logits of every target and `num_negatives` seeded uniform negatives per example
    (negatives equal to the target are dropped)."""
    graphdef, state = nnx.split(model)
    n = len(examples)
    negatives_nm = np.random.default_rng(seed).integers(0, num_items, (n, num_negatives))
    items_ng = np.concatenate([examples.target[:, None], negatives_nm], axis=1).astype(np.int32)
    out = []
    for start in range(0, n, _EVAL_BATCH):
        rows = np.arange(start, start + _EVAL_BATCH).clip(max=n - 1)  # fixed shape: pad rows
        history = examples.history[rows]
        logits = _pair_logits_jit(graphdef, state, history, history != PAD_ITEM, items_ng[rows])
        out.append(np.asarray(logits)[: min(_EVAL_BATCH, n - start)])
    logits_ng = np.concatenate(out)
    labels_ng = np.zeros(items_ng.shape, np.float32)
    labels_ng[:, 0] = 1.0
    keep_ng = (items_ng != examples.target[:, None]) | (labels_ng == 1)
    return EvalPairs(logits_ng[keep_ng].astype(np.float64), labels_ng[keep_ng])


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half)."""
    ranks = scipy.stats.rankdata(scores)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positives and negatives")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """sum_b (n_b / n) |mean label_b - mean prob_b| over equal-width probability bins."""
    which = np.minimum((probs * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, labels, bins) - np.bincount(which, probs, bins))
    return float(gap.sum() / max(count.sum(), 1))


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(scale, bias) maximising the likelihood of sigmoid(scale * logit + bias)."""

    def nll(params: np.ndarray) -> tuple[float, np.ndarray]:
        z = params[0] * logits + params[1]
        # log(1 + e^z) - y z, and its gradient (sigmoid(z) - y) * [logit, 1].
        loss = np.logaddexp(0.0, z) - labels * z
        residual = scipy.special.expit(z) - labels
        return float(loss.mean()), np.array([(residual * logits).mean(), residual.mean()])

    result = scipy.optimize.minimize(nll, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return float(result.x[0]), float(result.x[1])


@dataclasses.dataclass(frozen=True)
class CtrModel:
    """A trained, calibrated pCTR model: pCTR = sigmoid(scale * logit + bias).

    Attributes:
      graphdef, state: the network (nnx.split), static structure and arrays.
      scale, bias: the Platt calibration.
      report: AUC/ECE and training facts (as in report.json).
      trained: whether this build trained the model (False: loaded from the cache).
    """

    graphdef: nnx.GraphDef
    state: nnx.State
    scale: float
    bias: float
    report: dict[str, Any]
    trained: bool


def pctr_bg(graphdef: nnx.GraphDef, state: nnx.State, scale: jax.Array, bias: jax.Array,
            history_bh: jax.Array, history_mask_bh: jax.Array, items_bg: jax.Array) -> jax.Array:
    """float32 [B, G] calibrated pCTR; pure and jittable (graphdef static)."""
    logits_bg = pair_logits_bg(graphdef, state, history_bh, history_mask_bh, items_bg)
    return jax.nn.sigmoid(scale * logits_bg + bias)


def _check_cached_options(run_dir: epath.Path, record: dict[str, Any]) -> None:
    path = run_dir / OPTIONS_FILE
    saved = read_json(path)
    if saved is not None:
        if saved != record:
            raise ValueError(f"{run_dir} holds a pCTR model trained with {saved}, not the "
                             f"requested {record}; remove it or use another work directory")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, record)


def _restore(model: nnx.Module, options: CtrOptions, run_dir: epath.Path, step: int,
             mesh_config: ConfigDict, seed: int) -> nnx.Module:
    """The model saved at `step` by the training run in run_dir (optimizer state discarded)."""
    train = options.training_config()
    optimizer = make_optimizer(train.learning_rate, train.warmup_steps, train.num_steps,
                               weight_decay=train.weight_decay, clip_norm=train.clip_norm)
    mesh = make_mesh(data=mesh_config.data, fsdp=mesh_config.fsdp)
    graphdef, state, _ = create_train_state(model, optimizer, jax.random.key(seed), mesh)
    with Checkpointer(run_dir / "checkpoints", keep=train.keep_checkpoints,
                      best_metric="valid/auc") as checkpointer:
        state = checkpointer.restore(step, state)
    return nnx.merge(graphdef, state.params, state.model_state)


def build_ctr_model(setup: RewardSetup, name: str, options: Mapping[str, Any]) -> CtrModel:
    """The pCTR model of channel `name` (trained, or loaded from its cache; module docstring)."""
    opts = CtrOptions(**options)
    seed = setup.seed + opts.seed_offset
    dataset, config = setup.dataset, setup.config
    max_history = int(config.data.max_history)
    run_dir = setup.rewards_dir / f"{name}_seed{seed}"
    _check_cached_options(run_dir, {**dataclasses.asdict(opts), "seed": seed,
                                    "dataset": dataset.name, "num_items": dataset.num_items,
                                    "max_history": max_history})
    splits = leave_one_out(dataset, max_history)
    model = make_ctr_network(opts, dataset.num_items, max_history, seed)
    report_path = run_dir / REPORT_FILE
    report = read_json(report_path)
    if report is not None:
        model = _restore(model, opts, run_dir, report["best_step"], config.mesh, seed)
        logging.info("pCTR %s: loaded from %s", name, run_dir)
        graphdef, state = nnx.split(model)
        return CtrModel(graphdef, state, report["scale"], report["bias"], report, trained=False)

    valid_subset = subsample(splits.valid, opts.valid_examples, seed)

    def pairs(model: nnx.Module, examples: Examples, stream: int) -> EvalPairs:
        return score_pairs(model, examples, dataset.num_items, opts.num_negatives, seed + stream)

    def evaluate(model: nnx.Module, examples: Examples) -> dict[str, float]:
        valid = pairs(model, examples, _VALID_STREAM)
        return {"auc": auc(valid.logits, valid.labels)}

    loss_fn = functools.partial(bce_loss, num_items=dataset.num_items,
                                num_negatives=opts.num_negatives)
    outcome = train_supervised(
        model=model, loss_fn=loss_fn, evaluate=evaluate, train=splits.train,
        valid=valid_subset, config=opts.training_config(), mesh_config=config.mesh,
        run_dir=run_dir, seed=seed,
    )
    valid = pairs(outcome.model, splits.valid, _VALID_STREAM)
    scale, bias = fit_platt(valid.logits, valid.labels)
    test = pairs(outcome.model, splits.test, _TEST_STREAM)
    expit = scipy.special.expit
    report = {
        "channel": name,
        "architecture": opts.architecture,
        "seed": seed,
        "scale": scale,
        "bias": bias,
        "valid_auc": auc(valid.logits, valid.labels),
        "test_auc": auc(test.logits, test.labels),
        "test_ece": expected_calibration_error(expit(scale * test.logits + bias), test.labels),
        "test_ece_uncalibrated": expected_calibration_error(expit(test.logits), test.labels),
        "test_positive_rate": float(test.labels.mean()),
        "num_test_pairs": int(test.labels.size),
        "best_step": outcome.best_step,
        "last_step": outcome.last_step,
        "negatives": f"{opts.num_negatives} uniform per target",
    }
    write_json(report_path, report)
    logging.info("pCTR %s: %s", name, report)
    graphdef, state = nnx.split(outcome.model)
    return CtrModel(graphdef, state, scale, bias, report, trained=True)
