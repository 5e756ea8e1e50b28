"""Diagnostics a finished run predates, recomputed from the test rankings it saved.

The ranking diagnostics grow as measurements point somewhere new (the follows users split by
the training count of their transition came after many runs had finished). Every ranking stage
saves its test rankings (<run>/<system>/test_rankings.npz), so a table can show a new
diagnostic for an old run without training it again: the training statistics and the test
histories come from the data that the run's config.json names, and the rankings must match
that test split user for user. What was recomputed is recorded in the returned results under
BACKFILLED_KEY, so a reader can tell a backfilled number from one the run reported.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging
from ml_collections import ConfigDict

from sgrec_jax.data.split import leave_one_out, training_sequences
from sgrec_jax.evaluation.diagnostics import TrainingStatistics, ranking_diagnostics
from sgrec_jax.stages.multi_seed import RANKINGS_FILE, SYSTEMS
from sgrec_jax.stages.pipeline import CONFIG_FILE, load_configured_dataset
from sgrec_jax.train.evaluate import Rankings

BACKFILLED_KEY = "backfilled_diagnostics"  # {system: [diagnostic keys recomputed]}
# A run lacking this key (for a system it ranked with) gets every diagnostic it lacks.
PROBE_KEY = "diag/recall@10|follows_once"


@functools.lru_cache(maxsize=4)
def _test_data(data_json: str, max_history: int) -> tuple[TrainingStatistics, np.ndarray,
                                                          np.ndarray]:
    """(training statistics, test histories [U, H], test users [U]) of one data config."""
    dataset = load_configured_dataset(ConfigDict({"data": json.loads(data_json)}))
    test = leave_one_out(dataset, max_history).test
    stats = TrainingStatistics.from_sequences(training_sequences(dataset), dataset.num_items)
    return stats, test.history, test.user


def backfill_diagnostics(directory: str, results: Mapping[str, Any]) -> dict[str, Any]:
    """`results` (a run's results.json) plus the diagnostics it lacks for each system it ranked.

    A system qualifies when results holds its recall@10, lacks PROBE_KEY and its rankings file
    exists; keys the run reported are never replaced. Runs without a stored config are
    returned unchanged. Raises ValueError when saved rankings do not match the test split.
    """
    out = dict(results)
    config_path = os.path.join(directory, CONFIG_FILE)
    todo = [
        (system, prefix) for system, prefix in SYSTEMS.items()
        if f"{prefix}recall@10" in results and f"{prefix}{PROBE_KEY}" not in results
        and os.path.exists(os.path.join(directory, system, RANKINGS_FILE))
    ]
    if not todo or not os.path.exists(config_path):
        return out
    with open(config_path) as f:
        data = json.load(f)["data"]
    stats, history_uh, users_u = _test_data(json.dumps(data, sort_keys=True),
                                            int(data["max_history"]))
    backfilled = dict(out.get(BACKFILLED_KEY, {}))
    for system, prefix in todo:
        path = os.path.join(directory, system, RANKINGS_FILE)
        rankings = Rankings.load(path)
        if not np.array_equal(rankings.users_u, users_u):
            raise ValueError(f"{path}: its users are not the test split of the data in "
                             f"{config_path} ({len(rankings.users_u)} vs {len(users_u)} users)")
        diagnostics = ranking_diagnostics(rankings.items_uk, rankings.targets_u, history_uh, stats)
        added = sorted(key for key in diagnostics if f"{prefix}{key}" not in out)
        out.update({f"{prefix}{key}": diagnostics[key] for key in added})
        backfilled[system] = added
        logging.info("%s: recomputed %d diagnostics from %s", directory, len(added), path)
    out[BACKFILLED_KEY] = backfilled
    return out
