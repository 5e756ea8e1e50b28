"""The "popularity" and "item_transition" stages: the counting floors every table reports.

No training: each fits by counting over the training part of the sequences
(sgrec_jax/models/counting.py) and ranks the full catalog for every test user, evaluated by the
same code as the learned systems (protocol metrics, coverage@10 and the ranking diagnostics).
Metrics go under "<stage>/" (e.g. item_transition/recall@10), ranked lists to
DIR/<stage>/test_rankings.npz. Options live in config.baselines.<stage>; each stage is registered
with their defaults (models/defaults.py). Neither needs the "sids" stage; when it ran before
them, their reports also give diag/first_codes@10. Both take seconds on Beauty. On a run over
shards (data.source "array_record") both fit from the transitions the shard writer counted, the
same counts (data/transitions.py), so the sequences are never needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from absl import logging
from ml_collections import ConfigDict

from sgrec_jax.core.distributed import is_primary_process
from sgrec_jax.data.shard_dataset import ShardDataset
from sgrec_jax.data.sources import load_splits
from sgrec_jax.data.split import training_sequences
from sgrec_jax.models.counting import ItemTransition, Popularity
from sgrec_jax.stages.pipeline import STAGES, RunContext, Stage
from sgrec_jax.stages.reports import ranked_test_split, report_test_split
from sgrec_jax.train.evaluate import Rankings

TOP_K = 10  # Ranked list length, as the learned systems' (ndcg@10, coverage@10).


def _check_options(config: ConfigDict, name: str) -> dict[str, Any]:
    """config.baselines.<name> as a dict, after checking its fields (errors name the field)."""
    field = f"baselines.{name}"
    if "baselines" not in config or name not in config.baselines:
        raise ValueError(f"stage {name!r} needs the config section {field}")
    options = STAGES.resolve(name, config.baselines[name])
    if not isinstance(options["exclude_history"], bool):
        raise ValueError(f"{field}.exclude_history must be True or False, got "
                         f"{options['exclude_history']!r}")
    if name == "item_transition":
        window, weights = options["window"], tuple(options["weights"])
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"{field}.window must be an integer >= 1, got {window!r}")
        if len(weights) != window:
            raise ValueError(f"{field}.weights must give one weight per window item ({window}), "
                             f"got {len(weights)}: {weights}")
        if any(not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w)
               or w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"{field}.weights must be finite numbers >= 0, not all 0, got "
                             f"{weights}")
        options["weights"] = tuple(float(w) for w in weights)
    return options


def item_transition_weights(config: ConfigDict) -> tuple[float, ...]:
    """The item_transition baseline's weights as a run's config sets them (checked as the stage
    checks them), or the stage's defaults for a config without the section (older runs)."""
    if "baselines" not in config or "item_transition" not in config.baselines:
        return tuple(float(w) for w in STAGES.resolve("item_transition")["weights"])
    return _check_options(config, "item_transition")["weights"]


def _run_baseline(context: RunContext, name: str, fit: Callable[[dict], Any]) -> None:
    config, dataset = context.config, context.dataset
    options = _check_options(config, name)
    splits = load_splits(dataset, max_history=config.data.max_history,
                         source=config.data.source, shards_dir=config.data.shards_dir)
    test = ranked_test_split(context, splits.test)
    model = fit(options)
    items_uk, scores_uk = model.rank(test.history, TOP_K,
                                     exclude_history=options["exclude_history"])
    rankings = Rankings(test.user, test.target, items_uk, scores_uk)
    if is_primary_process():
        rankings.save(os.path.join(context.workdir, name, "test_rankings.npz"))
    report = report_test_split(context, rankings, test.history)
    logging.info("%s test (%d users): %s", name, report["num_users"],
                 " ".join(f"{k} {v:.4f}" for k, v in report.items()))
    context.metrics.update({f"{name}/{k}": v for k, v in report.items()})


def _popularity(context: RunContext) -> None:
    dataset = context.dataset
    if isinstance(dataset, ShardDataset):
        _run_baseline(context, "popularity",
                      lambda options: Popularity.from_counts(dataset.transitions))
        return
    sequences = training_sequences(dataset)
    _run_baseline(context, "popularity",
                  lambda options: Popularity.fit(sequences, dataset.num_items))


def _item_transition(context: RunContext) -> None:
    dataset = context.dataset
    if isinstance(dataset, ShardDataset):
        _run_baseline(context, "item_transition", lambda options: ItemTransition.from_counts(
            dataset.transitions, weights=options["weights"]
        ))
        return
    sequences = training_sequences(dataset)
    _run_baseline(context, "item_transition", lambda options: ItemTransition.fit(
        sequences, dataset.num_items, weights=options["weights"]
    ))


POPULARITY = Stage(run=_popularity, check=lambda config: _check_options(config, "popularity"))
ITEM_TRANSITION = Stage(run=_item_transition,
                        check=lambda config: _check_options(config, "item_transition"))
