"""The test report every ranking stage writes: protocol metrics plus the ranking diagnostics.

The diagnostics (sgrec_jax/evaluation/diagnostics.py) need the training statistics, computed
once per run from the training part of the sequences and shared by the stages through the
context's artifacts, and the SID table when the "sids" stage ran (for first_codes@10).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sgrec_jax.data.split import training_sequences
from sgrec_jax.evaluation.diagnostics import TrainingStatistics
from sgrec_jax.stages.pipeline import RunContext
from sgrec_jax.train.evaluate import Rankings, ranking_report, scalar_metrics

TRAINING_STATISTICS = "training_statistics"  # The artifact holding the TrainingStatistics.


def training_statistics(context: RunContext) -> TrainingStatistics:
    """The run's TrainingStatistics, computed on first use."""
    if TRAINING_STATISTICS not in context.artifacts:
        dataset = context.dataset
        context.artifacts[TRAINING_STATISTICS] = TrainingStatistics.from_sequences(
            training_sequences(dataset), dataset.num_items
        )
    return context.artifacts[TRAINING_STATISTICS]


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
