"""One-seed ablation of generator recipes: each variant's run, one table with the floors beside it.

    python -m experiments.sft_ablation --config=experiments/configs/NAME.py --workdir=DIR \
        --variant=base --variant='buckets:sft.length_buckets=(3,8)' [--reference=base] \
        [--export=RESULTS.json] [--config.FIELD=VALUE ...]

A variant is a name and config overrides (sgrec_jax/stages/variants.py). Every variant's
overrides and stage names are checked, and so is every finished directory's config, before the
first run starts. Then each variant runs the pipeline in DIR/<name> with the config's seed, one
after another; a directory holding results.json of the same config (up to run-control fields,
sgrec_jax/stages/runs.py) is loaded instead, so rerunning the command resumes variant by variant.
DIR/<name> may be a symlink to a run made earlier with the same config: that run is adopted,
read and never written (a symlink to a run without results.json is refused, as that run may
still be training elsewhere). Object stores (DIR = gs://...) have no symlinks.

Rows: one per variant (its generator, the "sft" stage), then the floors "item_transition" and
"popularity" of the reference variant's run (deterministic counts on the same data; another
variant that reports them with other numbers is warned about). Per row: TABLE_METRICS and every
"diag/" key (sgrec_jax/evaluation/diagnostics.py) the run reports (a diagnostic added after the
run finished is recomputed from its saved rankings: sgrec_jax/stages/backfill.py; the results
file lists those under "backfilled_diagnostics"), and for variants the cost
(COST_METRICS; null where an older run did not record it; wall_seconds is the run's last
invocation). The paired bootstrap over test users, from the saved test_rankings.npz, compares
each variant with the reference variant and with item_transition on BOOTSTRAP_METRICS.

DIR receives ablation.md (the variants, the main and diagnostics tables, the bootstrap lines),
ablation.csv (every metric of every row, full precision) and ablation.json, the table in
benchmarks.md's results-file format (sgrec_jax/evaluation/results_file.py) plus
"variants": {name: {field: value}}; --export writes the same file to a second path.

experiments/sft_ablation.py is the command line; the logic lives here so tests can import it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import logging
from etils import epath
from ml_collections import ConfigDict

from sgrec_jax.core.files import as_path, atomic_write, is_local, write_json
from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.evaluation.bootstrap import BootstrapResult
from sgrec_jax.evaluation.paired import (
    PROTOCOL_METRICS,
    UserMetrics,
    paired_bootstrap_by_seed,
    user_metrics,
)
from sgrec_jax.evaluation.results_file import agreed_value, merged_provenance, results_file
from sgrec_jax.evaluation.tables import results_table, to_csv
from sgrec_jax.stages.backfill import BACKFILLED_KEY, backfill_diagnostics
from sgrec_jax.stages.multi_seed import (
    DIAGNOSTIC_PREFIX,
    RANKINGS_FILE,
    SYSTEMS,
    TABLE_METRICS,
    reported_metrics,
)
from sgrec_jax.stages.pipeline import RESULTS_FILE, check_config, run_pipeline
from sgrec_jax.stages.runs import check_same_config, run_or_load
from sgrec_jax.stages.variants import Variant, variant_configs

GENERATOR = "sft"  # The SYSTEMS name of every variant's row.
FLOORS = ("item_transition", "popularity")
BASELINE = "item_transition"  # Every variant is also bootstrapped against this floor.
BOOTSTRAP_METRICS = PROTOCOL_METRICS
# Column -> results.json key of a variant's cost.
COST_METRICS = {
    "examples_per_s": "sft/examples_per_s",
    "train_seconds": "sft/train_seconds",
    "best_step": "sft/best_step",
    "last_step": "sft/last_step",
    "parameters": "sft/parameters",
    "wall_seconds": "wall_seconds",
}
# (header, metric, format) of the two markdown tables.
MAIN_COLUMNS = (
    ("R@5", "recall@5", "{:.4f}"), ("N@5", "ndcg@5", "{:.4f}"),
    ("R@10", "recall@10", "{:.4f}"), ("N@10", "ndcg@10", "{:.4f}"),
    ("coverage@10", "coverage@10", "{:.4f}"), ("examples/s", "examples_per_s", "{:.1f}"),
    ("best step", "best_step", "{:.0f}"),
)
DIAGNOSTIC_COLUMNS = (
    ("R@10\\|follows", "diag/recall@10|follows", "{:.4f}"),
    ("R@10\\|not_follows", "diag/recall@10|not_follows", "{:.4f}"),
    *((f"R@10\\|follows_{c}", f"diag/recall@10|follows_{c}", "{:.4f}")
      for c in ("once", "few", "often")),
    *((f"R@10 q{q}", f"diag/recall@10|pop_q{q}", "{:.4f}") for q in range(1, 6)),
    ("history_share@10", "diag/history_share@10", "{:.4f}"),
    ("popular_share@10", "diag/popular_share@10", "{:.4f}"),
    ("first_codes@10", "diag/first_codes@10", "{:.1f}"),
)
SHORT_NAMES = {"recall@5": "R@5", "ndcg@5": "N@5", "recall@10": "R@10", "ndcg@10": "N@10"}
TABLE_FILE = "ablation"


@dataclasses.dataclass(frozen=True)
class VariantRun:
    """A variant's finished run.

    Attributes:
      variant: the name and override texts.
      values: field -> the value the override set.
      seed: the run's config.seed.
      directory: DIR/<name> (possibly a symlink to an adopted run).
      results: its results.json.
    """

    variant: Variant
    values: Mapping[str, Any]
    seed: int
    directory: str
    results: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Row:
    """One table row: a system (SYSTEMS name) of one run directory."""

    name: str
    system: str
    seed: int
    directory: str
    results: Mapping[str, Any]

    def metrics(self) -> dict[str, Any]:
        """TABLE_METRICS, every diagnostic, and for a generator row its cost (NaN if absent)."""
        metrics = reported_metrics(self.results, self.system)
        if self.system == GENERATOR:
            for name, key in COST_METRICS.items():
                value = self.results.get(key)
                metrics[name] = float("nan") if value is None else value
        return metrics

    def user_metrics(self) -> UserMetrics:
        return user_metrics(os.path.join(self.directory, self.system, RANKINGS_FILE),
                            BOOTSTRAP_METRICS)


def variant_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, name)


def pick_reference(variants: Sequence[Variant], reference: str | None) -> str:
    """The reference variant's name: `reference`, or the first variant when None or empty."""
    names = [v.name for v in variants]
    if not reference:
        return names[0]
    if reference not in names:
        raise ValueError(f"--reference={reference} is not a variant ({', '.join(names)})")
    return reference


def _check_directory(name: str, directory: str, config: ConfigDict,
                     defaults: ConfigDict | None = None) -> None:
    """A dangling symlink, a symlink to an unfinished run, or a finished run of another config
    fails before any run (fields added since it ran pass at their default value)."""
    if os.path.islink(directory) and not os.path.exists(directory):
        raise ValueError(f"variant {name!r}: {directory} is a symlink to "
                         f"{os.readlink(directory)}, which does not exist")
    finished = epath.Path(directory, RESULTS_FILE).exists()
    if os.path.islink(directory) and not finished:
        # Its run may still be training elsewhere: resuming it from here could collide.
        raise ValueError(f"variant {name!r}: {directory} links to {os.readlink(directory)}, "
                         f"which has no {RESULTS_FILE}; finish that run first, or remove the "
                         "link to run the variant here")
    if finished:
        try:
            check_same_config(directory, config, defaults=defaults)
        except ValueError as e:
            raise ValueError(f"variant {name!r}: {e}") from None


def run_variants(
    config: ConfigDict,
    workdir: str,
    variants: Sequence[Variant],
    run: Callable[[ConfigDict, str], dict[str, Any]] = run_pipeline,
    defaults: ConfigDict | None = None,
) -> list[VariantRun]:
    """Runs each variant not yet finished in DIR/<name>, in order; every variant's run.

    Every override, stage name and finished directory is checked before the first run, and
    every variant must run the "sft" stage. `defaults` (the code's default config) lets a
    finished run adopt fields added after it ran that hold their default
    (`runs.check_same_config`); None compares strictly.
    """
    workdir = as_path(workdir)
    configs = variant_configs(config, variants)
    for name, (variant_config, _) in configs.items():
        if GENERATOR not in variant_config.stages:
            raise ValueError(f"variant {name!r}: config.stages {tuple(variant_config.stages)} "
                             f"has no {GENERATOR!r} stage, the generator the table compares")
        try:
            check_config(variant_config)
        except (ValueError, UnknownNameError) as e:
            raise ValueError(f"variant {name!r}: {e}") from None
        _check_directory(name, variant_dir(workdir, name), variant_config, defaults=defaults)
    runs = []
    for variant in variants:
        variant_config, values = configs[variant.name]
        directory = variant_dir(workdir, variant.name)
        results = run_or_load(variant_config, directory, f"variant {variant.name}", run=run,
                              defaults=defaults)
        runs.append(VariantRun(variant, values, int(variant_config.seed), directory, results))
    return runs


def table_rows(runs: Sequence[VariantRun], reference: str) -> dict[str, Row]:
    """A row per variant, then each floor the reference run reports (module docstring)."""
    rows = {r.variant.name: Row(r.variant.name, GENERATOR, r.seed, r.directory, r.results)
            for r in runs}
    ref = rows[reference]
    for floor in FLOORS:
        key = f"{SYSTEMS[floor]}recall@10"
        if key not in ref.results:
            logging.warning("the reference %s did not run %s: no such row", reference, floor)
            continue
        rows[floor] = Row(floor, floor, ref.seed, ref.directory, ref.results)
        for r in runs:
            if key in r.results and r.results[key] != ref.results[key]:
                logging.warning("%s of variant %s differs from the reference's (%s vs %s): "
                                "its data or floor options differ", floor, r.variant.name,
                                r.results[key], ref.results[key])
    return rows


def bootstrap_rows(
    rows: Mapping[str, Row], reference: str, *, num_resamples: int, bootstrap_seed: int
) -> dict[tuple[str, str], dict[str, dict[str, BootstrapResult]]]:
    """{(variant, reference)} for each other variant, then {(variant, item_transition)}."""
    variants = [name for name, row in rows.items() if row.system == GENERATOR]
    pairs = [(v, reference) for v in variants if v != reference]
    if BASELINE in rows:
        pairs += [(v, BASELINE) for v in variants]
    cache: dict[str, UserMetrics] = {}

    def per_user(name: str) -> UserMetrics:
        if name not in cache:
            cache[name] = rows[name].user_metrics()
        return cache[name]

    comparisons = {}
    for a, b in pairs:
        try:
            comparisons[a, b] = paired_bootstrap_by_seed(
                {rows[a].seed: (per_user(a), per_user(b))},
                num_resamples=num_resamples, bootstrap_seed=bootstrap_seed,
            )
        except ValueError as e:
            raise ValueError(f"{a} vs {b}: {e}") from None
    return comparisons


def _cell(value: Any, form: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return form.format(value)


def _markdown_table(
    metrics: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]
) -> str:
    lines = ["| row | " + " | ".join(header for header, _, _ in columns) + " |",
             "|" + "---|" * (1 + len(columns))]
    for row, values in metrics.items():
        cells = (_cell(values.get(metric), form) for _, metric, form in columns)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _bootstrap_lines(comparisons: Mapping[tuple[str, str], Mapping[str, Any]]) -> str:
    first = next(r for by_seed in comparisons.values() for results in by_seed.values()
                 for r in results.values())
    lines = [f"Paired bootstrap over {first.num_users} test users, A - B: mean difference "
             f"[{first.confidence:.0%} CI], {first.num_resamples} resamples; * = the CI "
             "excludes 0.", ""]
    for (a, b), by_seed in comparisons.items():
        for results in by_seed.values():
            parts = []
            for metric, r in results.items():
                mark = "*" if r.ci_low > 0 or r.ci_high < 0 else ""
                parts.append(f"{SHORT_NAMES.get(metric, metric)} {r.mean_diff:+.4f} "
                             f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]{mark}")
            lines.append(f"- {a} - {b}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def ablation_markdown(
    runs: Sequence[VariantRun],
    rows: Mapping[str, Row],
    comparisons: Mapping[tuple[str, str], Mapping[str, Any]],
    reference: str,
) -> str:
    """The variants, the main and diagnostics tables, and the bootstrap lines."""
    seeds = sorted({r.seed for r in runs})
    seed_text = (f"seed {seeds[0]}" if len(seeds) == 1
                 else "seeds " + ", ".join(f"{r.variant.name} {r.seed}" for r in runs))
    floors = [row for row in rows if row in FLOORS]
    text = (f"Recipe ablation, one run per variant ({seed_text}); reference {reference}"
            + (f"; floors ({', '.join(floors)}) from its run" if floors else "") + ".\n\n"
            + "".join(f"- {r.variant.name}: {r.variant.describe()}\n" for r in runs))
    metrics = {name: row.metrics() for name, row in rows.items()}
    text += "\n" + _markdown_table(metrics, MAIN_COLUMNS)
    text += "\nRanking diagnostics:\n\n" + _markdown_table(metrics, DIAGNOSTIC_COLUMNS)
    if comparisons:
        text += "\n" + _bootstrap_lines(comparisons)
    return text


def _csv(rows: Mapping[str, Row]) -> str:
    """Every metric any row reports (TABLE_METRICS, diagnostics, cost); NaN where it lacks one."""
    metrics = {name: row.metrics() for name, row in rows.items()}
    columns = list(TABLE_METRICS)
    for values in metrics.values():
        columns += [m for m in values if m.startswith(DIAGNOSTIC_PREFIX) and m not in columns]
    columns += list(COST_METRICS)
    table = results_table(
        {name: [{m: values.get(m, float("nan")) for m in columns}]
         for name, values in metrics.items()},
        columns,
    )
    return to_csv(table)


def ablation_results(
    runs: Sequence[VariantRun],
    rows: Mapping[str, Row],
    comparisons: Mapping[tuple[str, str], Mapping[str, Mapping[str, BootstrapResult]]],
) -> dict[str, Any]:
    """The results-file dict (benchmarks.md) of the rows, plus "variants": {name: {field:
    value}}. Provenance sources and configs name each run's real directory."""
    for name, row in rows.items():
        if "provenance" not in row.results or "dataset" not in row.results:
            raise ValueError(f"{name}: its results.json has no provenance or dataset record")
    real = {name: os.path.realpath(row.directory) if is_local(row.directory) else row.directory
            for name, row in rows.items()}
    provenance = merged_provenance(
        {f"{name}/seed_{row.seed}": row.results["provenance"] for name, row in rows.items()},
        sources=real,
        configs={real[name]: row.results["provenance"].get("config")
                 for name, row in rows.items()},
    )
    data = results_file(
        dataset=agreed_value({n: r.results["dataset"]["name"] for n, r in rows.items()},
                             "dataset"),
        users=agreed_value({n: r.results[SYSTEMS[r.system] + "num_users"]
                            for n, r in rows.items()}, "the number of test users"),
        items=agreed_value({n: r.results["dataset"]["items"] for n, r in rows.items()},
                           "items"),
        systems={name: {row.seed: row.metrics()} for name, row in rows.items()},
        bootstrap=comparisons, provenance=provenance,
    )
    data["variants"] = {r.variant.name: dict(r.values) for r in runs}
    backfilled = {name: row.results[BACKFILLED_KEY][row.system] for name, row in rows.items()
                  if row.system in row.results.get(BACKFILLED_KEY, {})}
    if backfilled:  # diagnostics the rows' runs predate, recomputed from their rankings
        data[BACKFILLED_KEY] = backfilled
    return data


def summarize(
    workdir: str,
    runs: Sequence[VariantRun],
    *,
    reference: str | None = None,
    num_resamples: int = 10_000,
    bootstrap_seed: int = 0,
    export: str | None = None,
) -> str:
    """Writes ablation.md/.csv/.json into workdir (and the results file to `export`).

    Returns the markdown, for printing.
    """
    reference = pick_reference([r.variant for r in runs], reference)
    runs = [dataclasses.replace(r, results=backfill_diagnostics(r.directory, r.results))
            for r in runs]
    rows = table_rows(runs, reference)
    comparisons = bootstrap_rows(rows, reference, num_resamples=num_resamples,
                                 bootstrap_seed=bootstrap_seed)
    text = ablation_markdown(runs, rows, comparisons, reference)
    data = ablation_results(runs, rows, comparisons)
    stem = os.path.join(workdir, TABLE_FILE)
    atomic_write(stem + ".md", lambda f: f.write(text.encode()))
    csv_text = _csv(rows)
    atomic_write(stem + ".csv", lambda f: f.write(csv_text.encode()))
    write_json(stem + ".json", data)
    if export:
        write_json(export, data)
        text += f"\nResults file: {export}\n"
    return text

