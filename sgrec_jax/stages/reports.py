"""The test report every ranking stage writes: protocol metrics plus the ranking diagnostics.

The diagnostics (sgrec_jax/evaluation/diagnostics.py) need the training statistics, computed
once per run from the training part of the sequences (from the shards' counted transitions on a
run over shards) and shared by the stages through the context's artifacts, and the SID table
when the "sids" stage ran (for first_codes@10). `ranked_test_split` gives the test examples a
stage ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sgrec_jax.data.shard_dataset import ShardDataset
from sgrec_jax.data.shards import ShardedExamples
from sgrec_jax.data.split import Examples, training_sequences
from sgrec_jax.evaluation.diagnostics import TrainingStatistics
from sgrec_jax.stages.pipeline import RunContext
from sgrec_jax.train.evaluate import Rankings, ranking_report, scalar_metrics, subsample

TRAINING_STATISTICS = "training_statistics"  # The artifact holding the TrainingStatistics.


def training_statistics(context: RunContext) -> TrainingStatistics:
    """The run's TrainingStatistics, computed on first use."""
    if TRAINING_STATISTICS not in context.artifacts:
        dataset = context.dataset
        context.artifacts[TRAINING_STATISTICS] = (
            TrainingStatistics.from_counts(dataset.transitions)
            if isinstance(dataset, ShardDataset)
            else TrainingStatistics.from_sequences(training_sequences(dataset), dataset.num_items)
        )
    return context.artifacts[TRAINING_STATISTICS]


def ranked_test_split(context: RunContext, test: Examples | ShardedExamples) -> Examples:
    """The test examples the stages rank: every one (the protocol), or with eval.test_users > 0
    a seeded subset of that many (measurements at scale; not protocol numbers)."""
    config = context.config
    return subsample(test, config.eval.get("test_users", 0), config.seed)


def report_test_split(
    context: RunContext, rankings: Rankings, history_uh: np.ndarray
) -> dict[str, Any]:
    """Scalar metrics and diagnostics of test `rankings`, whose rows have histories history_uh.

    (Not named test_*: pytest would collect it wherever it is imported.)
    """
    sids = context.artifacts.get("sids")
    return scalar_metrics(ranking_report(
        rankings, context.dataset.num_items, history_uh=history_uh,
        stats=training_statistics(context), codes_nl=None if sids is None else sids.codes_nl,
    ))
