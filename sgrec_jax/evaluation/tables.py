"""Multi-seed results tables: mean and standard deviation per system and metric.

The std is the sample standard deviation over seeds (ddof=1), the spread one expects between
independent reruns; it is undefined (NaN; blank in the files) for a single seed. Markdown is for
reading (rounded, "mean ± std"); CSV keeps full precision (Python float repr) for later analysis.
Both are written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import numbers
import os
from collections.abc import Mapping, Sequence

import numpy as np

from sgrec_jax.core.files import atomic_write


@dataclasses.dataclass(frozen=True)
class ResultsTable:
    """Per system (rows) and metric (columns): mean and ddof=1 std over seeds.

    Attributes:
      systems: row names, in the order given.
      metrics: column names.
      mean_sm, std_sm: float64 [systems, metrics]; std is NaN where a system has one seed.
      num_seeds_s: int [systems].
    """

    systems: tuple[str, ...]
    metrics: tuple[str, ...]
    mean_sm: np.ndarray
    std_sm: np.ndarray
    num_seeds_s: np.ndarray


def _is_scalar(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def results_table(
    runs: Mapping[str, Sequence[Mapping[str, object]]], metrics: Sequence[str] | None = None
) -> ResultsTable:
    """Aggregates {system: [metrics dict of each seed]} into a ResultsTable.

    metrics: the columns; default the scalar-valued keys of the first system's first seed, in
    their order (so ranking_metrics' "per_user" arrays are left out). Every seed must have them.
    """
    if not runs:
        raise ValueError("no systems to tabulate")
    if metrics is None:
        first = next(iter(runs.values()))
        if not first:
            raise ValueError(f"system {next(iter(runs))!r} has no seeds")
        metrics = [name for name, value in first[0].items() if _is_scalar(value)]
    metrics = tuple(metrics)
    if not metrics:
        raise ValueError("no scalar metrics to tabulate")
    means, stds, seeds = [], [], []
    for system, per_seed in runs.items():
        if not per_seed:
            raise ValueError(f"system {system!r} has no seeds")
        values_rm = np.empty((len(per_seed), len(metrics)))
        for r, result in enumerate(per_seed):
            for m, name in enumerate(metrics):
                if name not in result or not _is_scalar(result[name]):
                    raise ValueError(
                        f"system {system!r}, seed run {r}: no scalar metric {name!r}"
                    )
                values_rm[r, m] = float(result[name])  # type: ignore[arg-type]
        means.append(values_rm.mean(0))
        single = np.full(len(metrics), np.nan)
        stds.append(values_rm.std(0, ddof=1) if len(per_seed) > 1 else single)
        seeds.append(len(per_seed))
    return ResultsTable(
        systems=tuple(runs),
        metrics=metrics,
        mean_sm=np.stack(means),
        std_sm=np.stack(stds),
        num_seeds_s=np.asarray(seeds),
    )


def to_markdown(table: ResultsTable, digits: int = 4) -> str:
    """A GitHub markdown table: system | seeds | one "mean ± std" column per metric.

    A "|" inside a name (e.g. "diag/recall@10|follows") is escaped so it stays in its cell.
    """
    metrics = [name.replace("|", "\\|") for name in table.metrics]
    lines = [
        "| " + " | ".join(("system", "seeds", *metrics)) + " |",
        "|" + "---|" * (2 + len(table.metrics)),
    ]
    for s, system in enumerate(table.systems):
        cells = []
        for mean, std in zip(table.mean_sm[s], table.std_sm[s]):
            cell = f"{mean:.{digits}f}"
            cells.append(cell if math.isnan(std) else f"{cell} ± {std:.{digits}f}")
        row = (system.replace("|", "\\|"), str(table.num_seeds_s[s]), *cells)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: ResultsTable) -> str:
    """CSV: system, num_seeds, then <metric>_mean and <metric>_std for each metric."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["system", "num_seeds", *(f"{m}_{stat}" for m in table.metrics for stat in ("mean", "std"))]
    )
    for s, system in enumerate(table.systems):
        row: list[object] = [system, int(table.num_seeds_s[s])]
        for mean, std in zip(table.mean_sm[s], table.std_sm[s]):
            row += [repr(float(mean)), "" if math.isnan(std) else repr(float(std))]
        writer.writerow(row)
    return out.getvalue()


def write_table(table: ResultsTable, path_stem: str | os.PathLike, digits: int = 4) -> None:
    """Atomically writes <path_stem>.md and <path_stem>.csv."""
    stem = os.fspath(path_stem)
    for suffix, text in ((".md", to_markdown(table, digits)), (".csv", to_csv(table))):
        atomic_write(stem + suffix, lambda f, text=text: f.write(text.encode()))
