"""The committed results file of one table (benchmarks.md, "Results files"), built from runs.

    {"dataset": "beauty", "split": "test", "users": 22363, "items": 12101,
     "systems": {"<row>": {"seeds": [0, 1, 2], "mean": {metric: value}, "std": {metric: value},
                           "per_seed": [{metric: value}, ...]}},
     "bootstrap": [{"a": "<row>", "b": "<row>", "metric": "ndcg@10", "diff": ..., "ci95": [lo, hi],
                    "resamples": 10000, "seeds": "seed_mean" | "seed_<s>"}],
     "provenance": {"commit": ..., "config": ..., "data_hashes": ..., "packages": ...}}

mean and std (ddof 1, sgrec_jax/evaluation/tables.py) are over a row's seeds, for every scalar
metric all of its seeds report; per_seed follows "seeds". Values that are not finite (the std
of a single seed, a diagnostic of an empty group) are written as null. The bootstrap entries
give, per compared pair, seed set ("seed_<s>" one seed, "seed_mean" the per-user values
averaged over seeds; sgrec_jax/evaluation/paired.py) and metric, the mean difference a - b and
its 95% percentile interval.

Provenance merges the runs' own records (sgrec_jax/core/provenance.py), keyed "<row>/seed_<s>":
  commit, packages: the common value when every run agrees, else {run: value};
  data_hashes: {file name: sha256}, which every run must share (rows on other data would not
    compare);
  sources: {row: the multi-seed directory its runs come from};
  config: {directory: the resolved config of its first seed} (its seeds differ only in `seed`);
  python, platform: as commit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from sgrec_jax.evaluation.bootstrap import BootstrapResult
from sgrec_jax.evaluation.tables import results_table

CONFIDENCE = 0.95  # The "ci95" field.


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def system_entry(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """{"seeds", "mean", "std", "per_seed"} of one row from {seed: {metric: value}}."""
    if not per_seed:
        raise ValueError("a row needs at least one seed")
    seeds = sorted(per_seed)
    metrics = [m for m, v in per_seed[seeds[0]].items()
               if _is_number(v) and all(_is_number(per_seed[s].get(m)) for s in seeds)]
    table = results_table({"row": [per_seed[s] for s in seeds]}, metrics)
    return {
        "seeds": seeds,
        "mean": {m: _finite_or_none(v) for m, v in zip(metrics, table.mean_sm[0])},
        "std": {m: _finite_or_none(v) for m, v in zip(metrics, table.std_sm[0])},
        "per_seed": [{m: _finite_or_none(per_seed[s][m]) for m in metrics} for s in seeds],
    }


def bootstrap_entries(
    a: str, b: str, results: Mapping[str, Mapping[str, BootstrapResult]]
) -> list[dict[str, Any]]:
    """One entry per (seed set, metric) of a paired bootstrap a - b."""
    entries = []
    for seeds, by_metric in results.items():
        for metric, r in by_metric.items():
            if not math.isclose(r.confidence, CONFIDENCE):
                raise ValueError(f"{a} vs {b}: the results file holds 95% intervals, got "
                                 f"confidence {r.confidence}")
            entries.append({"a": a, "b": b, "metric": metric, "diff": r.mean_diff,
                            "ci95": [r.ci_low, r.ci_high], "resamples": r.num_resamples,
                            "seeds": seeds})
    return entries


def agreed_value(values: Mapping[str, Any], what: str) -> Any:
    """The value every run shares ({run: value}, e.g. the dataset name of each row and seed);
    ValueError naming `what` and each run's value when they differ."""
    if not values:
        raise ValueError(f"no runs to take {what} from")
    if len({repr(v) for v in values.values()}) != 1:
        raise ValueError(f"the runs disagree on {what}: {dict(values)}")
    return next(iter(values.values()))


def _agreed(values: Mapping[str, Any]) -> Any:
    """The common value of every run, or the {run: value} map when they differ."""
    distinct = {repr(v) for v in values.values()}
    return next(iter(values.values())) if len(distinct) == 1 else dict(values)


def merged_provenance(
    records: Mapping[str, Mapping[str, Any]],
    sources: Mapping[str, str],
    configs: Mapping[str, Any],
) -> dict[str, Any]:
    """Provenance of the whole table (module docstring) from each run's own record.

    records: {"<row>/seed_<s>": provenance}; sources: {row: the directory that ran it};
    configs: {directory: its resolved config}. Raises ValueError when runs read different data.
    """
    if not records:
        raise ValueError("no runs to take the provenance from")
    hashes = {
        run: {os.path.basename(path): digest
              for path, digest in record.get("data_files_sha256", {}).items()}
        for run, record in records.items()
    }
    first_run, first = next(iter(hashes.items()))
    for run, digests in hashes.items():
        if digests != first:
            raise ValueError(f"runs {first_run} and {run} read different data files "
                             f"({first} vs {digests}); their rows do not belong in one table")
    return {
        "commit": _agreed({run: r.get("git_commit") for run, r in records.items()}),
        "packages": _agreed({run: r.get("packages") for run, r in records.items()}),
        "python": _agreed({run: r.get("python") for run, r in records.items()}),
        "platform": _agreed({run: r.get("platform") for run, r in records.items()}),
        "data_hashes": first,
        "sources": dict(sources),
        "config": dict(configs),
    }


def results_file(
    *,
    dataset: str,
    users: int,
    items: int,
    systems: Mapping[str, Mapping[int, Mapping[str, Any]]],
    bootstrap: Mapping[tuple[str, str], Mapping[str, Mapping[str, BootstrapResult]]],
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """The results-file dict (module docstring).

    systems: {row: {seed: {metric: value}}}; bootstrap: {(a, b): paired_bootstrap_by_seed(...)}.
    """
    if not systems:
        raise ValueError("a results file needs at least one row")
    return {
        "dataset": dataset,
        "split": "test",
        "users": int(users),
        "items": int(items),
        "systems": {row: system_entry(per_seed) for row, per_seed in systems.items()},
        "bootstrap": [entry for (a, b), results in bootstrap.items()
                      for entry in bootstrap_entries(a, b, results)],
        "provenance": dict(provenance),
    }
