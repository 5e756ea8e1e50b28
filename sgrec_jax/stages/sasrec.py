"""The "sasrec" stage: the SASRec baseline with full-softmax cross-entropy, same protocol.

Trained by the same supervised loop as the generator (checkpoints in DIR/sasrec) and evaluated
by the same code (top-k of its scores over the whole catalog). Its metrics are reported under
`sasrec/` (e.g. sasrec/recall@10), so one run can hold both systems side by side; ranked lists go
to DIR/sasrec/test_rankings.npz. Its scorer is reused later as the pCTR model of the eCPM reward.
The model's options are config.sasrec.model (defaults: models/defaults.py).
"""

from __future__ import annotations

import os

from absl import logging
from flax import nnx
from ml_collections import ConfigDict

from sgrec_jax.core.distributed import is_primary_process
from sgrec_jax.data.sources import check_data_source, load_splits
from sgrec_jax.models.sasrec import SASRec, ce_loss
from sgrec_jax.stages.pipeline import STAGES, RunContext, Stage
from sgrec_jax.stages.reports import ranked_test_split, report_test_split
from sgrec_jax.train.evaluate import rank_with_scores, ranking_report, scalar_metrics, subsample
from sgrec_jax.train.supervised import check_training_config, train_supervised


def _loss(model: SASRec, batch: dict, rng) -> tuple:
    return ce_loss(model, batch, rng), {}


def _check(config: ConfigDict) -> None:
    check_training_config(config.sasrec.train, "sasrec.train")
    check_data_source(config.data.source, config.data.shards_dir)
    if config.sasrec.train.get("length_buckets", ()):
        raise ValueError("sasrec.train.length_buckets must be (): SASRec reads full-width "
                         "histories (its positions count from the left)")
    STAGES.resolve("sasrec", config.sasrec.model)  # registered with SASRec's options


def _run(context: RunContext) -> None:
    config, dataset = context.config, context.dataset
    splits = load_splits(dataset, max_history=config.data.max_history,
                         source=config.data.source, shards_dir=config.data.shards_dir)
    model = SASRec(dataset.num_items, config.data.max_history, rngs=nnx.Rngs(config.seed),
                   **dict(config.sasrec.model))

    def evaluate(model, examples):
        rankings = rank_with_scores(model, examples, k=10, batch_size=config.eval.batch_size)
        return scalar_metrics(ranking_report(rankings, dataset.num_items))

    run_dir = os.path.join(context.workdir, "sasrec")
    outcome = train_supervised(
        model=model, loss_fn=_loss, evaluate=evaluate, train=splits.train,
        valid=subsample(splits.valid, config.eval.valid_users, config.seed),
        config=config.sasrec.train, mesh_config=config.mesh, run_dir=run_dir, seed=config.seed,
    )
    test = ranked_test_split(context, splits.test)
    rankings = rank_with_scores(outcome.model, test, k=10, batch_size=config.eval.batch_size)
    if is_primary_process():
        rankings.save(os.path.join(run_dir, "test_rankings.npz"))
    report = report_test_split(context, rankings, test.history)
    logging.info("SASRec test (%d users): %s", report["num_users"],
                 " ".join(f"{k} {v:.4f}" for k, v in report.items()))
    context.artifacts["sasrec"] = outcome.model
    context.metrics.update({f"sasrec/{k}": v for k, v in report.items()})
    context.metrics.update({"sasrec/best_step": outcome.best_step,
                            "sasrec/last_step": outcome.last_step,
                            "sasrec/train_seconds": outcome.train_seconds,
                            "sasrec/examples_per_s": outcome.examples_per_second(
                                config.sasrec.train.batch_size)})


STAGE = Stage(run=_run, check=_check)
