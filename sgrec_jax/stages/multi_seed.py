"""Runs an experiment over several seeds, tabulates mean ± std, and bootstraps system differences.

    python -m experiments.multi_seed --config=experiments/configs/NAME.py[:ARG] --workdir=DIR \
        --seeds=0,1,2 [--export=RESULTS.json] [--config.FIELD=VALUE ...]
    python -m experiments.multi_seed --merge=DIR_1,DIR_2,... --workdir=OUT [--export=RESULTS.json]
    python -m experiments.multi_seed --compare=DIR_A,DIR_B --workdir=OUT [--system=sft[,sasrec]]

Seed s runs the pipeline in DIR/seed_<s> with config.seed = s, which seeds the model's
initialisation, dropout, batch order, the validation subset and, for learned SIDs, the
quantizer. The data stay fixed (data.bid_seed is not varied; the split is deterministic), so
every seed is scored on the same test users and systems can be paired user by user. A seed
whose results.json exists is skipped, so rerunning the command resumes cell by cell (a seed
stopped midway resumes from its checkpoints); a finished seed must have the same config, up to
run-control fields such as sft.max_steps_per_run.

Systems (SYSTEMS): "sft" (the generator), "sasrec", and the counting floors "item_transition"
and "popularity" (deterministic: every seed gives the same numbers), each present when its
stage ran; and "fusion", the generator reranked with transition counts (`experiments.fusion
--workdir=DIR/seed_<s>`, run after the seed; `with_posthoc_systems`). DIR receives
- table.md/.csv: mean ± std over seeds per system of TABLE_METRICS;
- diagnostics.md/.csv: the same for DIAGNOSTIC_METRICS (sgrec_jax/evaluation/diagnostics.py),
  the columns every system reports;
- bootstrap.md/.json (when "sft" and a baseline ran): a paired bootstrap over test users of
  sft - baseline on recall@5, ndcg@5, recall@10 and ndcg@10 (the four metrics
  benchmarks.md sets bars on) for each baseline present (BASELINES), per seed and
  for the per-user values averaged over seeds ("seed_mean": user sampling only, the seed noise
  averaged out). Per-user values are recomputed from each system's saved test_rankings.npz.
  bootstrap.json maps each baseline to its {"a": "sft", "b": baseline, "results"} record.
--export=PATH also writes the table in the committed results-file format of benchmarks.md
("Results files", sgrec_jax/evaluation/results_file.py): rows sft, sasrec, item_transition,
popularity; mean/std/per-seed values of TABLE_METRICS and every diagnostic; the bootstrap entries
of sft vs each baseline; provenance from the seeds' results.json.

--merge tabulates systems of several multi-seed directories as one table (e.g. the generator and
floors of an SFT config's directory with the SASRec config's directory), writing the files
above into OUT. Each system comes from the first directory listed that ran it; a later
directory that also ran it must report the same test metrics for every seed both finished
(else an error names the system, seed and metric), and its runs of that system are not used.
sft is bootstrapped against each baseline over the seeds both finished.

--compare pairs a system of one multi-seed directory with a system of another by seed (those both
have finished) and user, and writes OUT/compare.md/.json (table of both plus the bootstrap A - B).
--system names the system of both directories, or of A and B in turn: --system=sft,sasrec
compares the generator of DIR_A with the SASRec baseline of DIR_B (each config's own run).

experiments/multi_seed.py is the command line; the logic lives here so tests and other runners
can import it (absl flags may be defined once per process).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
from etils import epath
from ml_collections import ConfigDict

from sgrec_jax.core.files import as_path, atomic_write, read_json, write_json
from sgrec_jax.evaluation.bootstrap import BootstrapResult
from sgrec_jax.evaluation.paired import (
    PROTOCOL_METRICS,
    UserMetrics,
    bootstrap_json,
    bootstrap_markdown,
    paired_bootstrap_by_seed,
    user_metrics,
    write_bootstrap,
)
from sgrec_jax.evaluation.results_file import agreed_value, merged_provenance, results_file
from sgrec_jax.evaluation.tables import results_table, to_markdown, write_table
from sgrec_jax.stages.pipeline import RESULTS_FILE
from sgrec_jax.stages.runs import run_or_load

# System name -> prefix of its metrics in results.json (the sasrec stage reports "sasrec/...").
SYSTEMS = {
    "sft": "",
    "fusion": "fusion/",
    "sasrec": "sasrec/",
    "item_transition": "item_transition/",
    "popularity": "popularity/",
}
BASELINES = ("sasrec", "item_transition", "popularity")  # sft is bootstrapped against each.
TABLE_METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "coverage@10", "valid_rate")
BOOTSTRAP_METRICS = PROTOCOL_METRICS  # Every table metric a bar is set on (benchmarks.md).
DIAGNOSTIC_PREFIX = "diag/"
DIAGNOSTIC_METRICS = (
    "diag/follows_share", "diag/recall@10|follows", "diag/recall@10|not_follows",
    *(f"diag/recall@10|pop_q{q}" for q in range(1, 6)),
    "diag/history_share@10", "diag/popular_share@10", "diag/first_codes@10",
)
# Reported since the follows split by training count; tables show them where every row has them.
FOLLOWS_COUNT_METRICS = tuple(
    f"diag/recall@10|follows_{name}" for name in ("once", "few", "often")
)
RANKINGS_FILE = "test_rankings.npz"
# Systems computed after a seed's run by a separate command, each in seed_<s>/<system>/ with its
# own results.json (unprefixed test-report keys) and test_rankings.npz.
POSTHOC_SYSTEMS = ("fusion",)


def seed_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, f"seed_{seed}")


def with_posthoc_systems(result: Mapping[str, Any], directory: str) -> dict[str, Any]:
    """A seed's results.json plus the test reports of the POSTHOC_SYSTEMS run on it.

    `experiments.fusion --workdir=SEED_DIR` writes SEED_DIR/fusion/results.json; its metrics join
    the seed's as "fusion/<key>" (its own "fusion/..." keys, e.g. the selected lam, as they are),
    so tables, --merge, --compare and --export treat it like any system. The seed's results.json
    is not modified.
    """
    merged = dict(result)
    for system in POSTHOC_SYSTEMS:
        posthoc = read_json(os.path.join(directory, system, RESULTS_FILE))
        if posthoc is None:
            continue
        prefix = SYSTEMS[system]
        for key, value in posthoc.items():
            if key in ("dataset", "provenance"):
                continue
            merged[key if key.startswith(prefix) else prefix + key] = value
    return merged


def run_seeds(
    config: ConfigDict, workdir: str, seeds: Sequence[int], defaults: ConfigDict | None = None,
) -> dict[int, dict]:
    """Runs the pipeline for each seed not yet finished; returns every seed's results.

    defaults as in `runs.check_same_config`: a finished seed adopts fields added after it ran
    that hold their default.
    """
    workdir = as_path(workdir)
    results = {}
    for seed in seeds:
        seed_config = config.copy_and_resolve_references()
        seed_config.seed = seed
        result = run_or_load(seed_config, seed_dir(workdir, seed), f"seed {seed}",
                             defaults=defaults)
        results[seed] = with_posthoc_systems(result, seed_dir(workdir, seed))
    return results


def load_results(workdir: str, seeds: Sequence[int]) -> dict[int, dict]:
    """results.json of each seed; a seed without one is an error."""
    results = {}
    for seed in seeds:
        path = os.path.join(seed_dir(workdir, seed), RESULTS_FILE)
        result = read_json(path)
        if result is None:
            raise ValueError(f"{path} does not exist: seed {seed} has not finished")
        results[seed] = with_posthoc_systems(result, seed_dir(workdir, seed))
    return results


def finished_seeds(workdir: str) -> list[int]:
    """The seeds of `workdir`'s seed_<s> folders that hold a results.json, ascending."""
    directory = epath.Path(workdir)
    if not directory.is_dir():
        raise ValueError(f"{workdir} is not a directory")
    seeds = []
    for path in directory.iterdir():
        seed = path.name.removeprefix("seed_")
        if seed != path.name and seed.isdigit() and (path / RESULTS_FILE).exists():
            seeds.append(int(seed))
    return sorted(seeds)


def systems_in(results: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """The systems (SYSTEMS order) whose recall@10 every seed reports."""
    return [
        system for system, prefix in SYSTEMS.items()
        if all(f"{prefix}recall@10" in r for r in results.values())
    ]


def system_metrics(
    result: Mapping[str, Any], system: str, metrics: Sequence[str] = TABLE_METRICS
) -> dict[str, Any]:
    """A seed's `metrics` for one system (those it reports), without the system's prefix."""
    prefix = SYSTEMS[system]
    return {m: result[prefix + m] for m in metrics if prefix + m in result}


def reported_metrics(result: Mapping[str, Any], system: str) -> dict[str, Any]:
    """TABLE_METRICS and every diagnostic a seed reports for one system, without the prefix."""
    prefix = SYSTEMS[system]
    diagnostics = [key.removeprefix(prefix) for key in result
                   if key.startswith(prefix + DIAGNOSTIC_PREFIX)]
    return system_metrics(result, system, (*TABLE_METRICS, *diagnostics))


@dataclasses.dataclass(frozen=True)
class SystemRuns:
    """One system's finished seeds, as run in one multi-seed directory.

    Attributes:
      system: a SYSTEMS name.
      workdir: the multi-seed directory.
      results: seed -> that seed's results.json.
    """

    system: str
    workdir: str
    results: Mapping[int, Mapping[str, Any]]

    def user_metrics(self, seed: int) -> UserMetrics:
        """Per-user BOOTSTRAP_METRICS of one seed, from its saved test rankings."""
        return user_metrics(
            os.path.join(seed_dir(self.workdir, seed), self.system, RANKINGS_FILE),
            BOOTSTRAP_METRICS,
        )


def _seeds_text(runs: Mapping[str, SystemRuns]) -> str:
    seed_sets = {system: ", ".join(map(str, r.results)) for system, r in runs.items()}
    if len(set(seed_sets.values())) == 1:
        return f"Seeds {next(iter(seed_sets.values()))}"
    return "Seeds: " + "; ".join(f"{system} {seeds}" for system, seeds in seed_sets.items())


def _bootstrap_against_baselines(
    runs: Mapping[str, SystemRuns], *, num_resamples: int, bootstrap_seed: int
) -> dict[tuple[str, str], dict[str, dict[str, BootstrapResult]]]:
    """{("sft", baseline): sft - baseline by seed} for each baseline present with common seeds."""
    comparisons = {}
    if "sft" not in runs:
        return comparisons
    sft = runs["sft"]
    for baseline in BASELINES:
        if baseline not in runs:
            continue
        seeds = sorted(set(sft.results) & set(runs[baseline].results))
        if not seeds:
            logging.warning("sft and %s have no finished seed in common: not compared", baseline)
            continue
        pairs = {seed: (sft.user_metrics(seed), runs[baseline].user_metrics(seed))
                 for seed in seeds}
        comparisons[("sft", baseline)] = paired_bootstrap_by_seed(
            pairs, num_resamples=num_resamples, bootstrap_seed=bootstrap_seed
        )
    return comparisons


def _write_comparisons(
    path_stem: str, comparisons: Mapping[tuple[str, str], Mapping[str, Any]]
) -> str:
    """<path_stem>.md (a section per pair) and .json ({b: bootstrap_json}), as the ablation's."""
    text = "".join(f"## {a} vs {b}\n\n{bootstrap_markdown(results, a, b)}\n"
                   for (a, b), results in comparisons.items())
    atomic_write(path_stem + ".md", lambda f: f.write(text.encode()))
    write_json(path_stem + ".json",
               {b: bootstrap_json(results, a, b) for (a, b), results in comparisons.items()})
    return text


def export_results(
    path: str,
    runs: Mapping[str, SystemRuns],
    comparisons: Mapping[tuple[str, str], Mapping[str, Mapping[str, BootstrapResult]]],
) -> None:
    """Writes the benchmarks.md results file (sgrec_jax/evaluation/results_file.py) to path."""
    seeds = {f"{system}/seed_{seed}": (system, result)
             for system, r in runs.items() for seed, result in r.results.items()}
    for run, (_, result) in seeds.items():
        if "provenance" not in result or "dataset" not in result:
            raise ValueError(f"{run}: its results.json has no provenance or dataset record")
    dataset = agreed_value({run: r["dataset"]["name"] for run, (_, r) in seeds.items()},
                           "dataset")
    items = agreed_value({run: r["dataset"]["items"] for run, (_, r) in seeds.items()}, "items")
    users = agreed_value({run: r[SYSTEMS[system] + "num_users"]
                          for run, (system, r) in seeds.items()}, "the number of test users")
    configs = {}
    for r in runs.values():
        first_seed = min(r.results)
        if r.workdir not in configs or first_seed < configs[r.workdir][0]:
            configs[r.workdir] = (first_seed, r.results[first_seed]["provenance"].get("config"))
    provenance = merged_provenance(
        {run: result["provenance"] for run, (_, result) in seeds.items()},
        sources={system: r.workdir for system, r in runs.items()},
        configs={workdir: config for workdir, (_, config) in configs.items()},
    )
    write_json(path, results_file(
        dataset=dataset, users=users, items=items,
        systems={system: {seed: reported_metrics(result, system)
                          for seed, result in r.results.items()}
                 for system, r in runs.items()},
        bootstrap=comparisons, provenance=provenance,
    ))


def tabulate(
    runs: Mapping[str, SystemRuns], out_dir: str, *, num_resamples: int = 10_000,
    bootstrap_seed: int = 0, export: str | None = None,
) -> str:
    """Writes table, diagnostics and bootstrap files (module docstring) into out_dir, and the
    results file to `export` when given. Returns the markdown, for printing."""
    def per_seed(metrics: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        return {system: [system_metrics(result, system, metrics) for result in r.results.values()]
                for system, r in runs.items()}

    table = results_table(per_seed(TABLE_METRICS), TABLE_METRICS)
    write_table(table, os.path.join(out_dir, "table"))
    text = f"{_seeds_text(runs)}:\n\n{to_markdown(table)}"
    reported = per_seed(DIAGNOSTIC_METRICS + FOLLOWS_COUNT_METRICS)
    diagnostics = [m for m in DIAGNOSTIC_METRICS + FOLLOWS_COUNT_METRICS
                   if all(m in seed for seeds in reported.values() for seed in seeds)]
    if diagnostics:
        table = results_table(reported, diagnostics)
        write_table(table, os.path.join(out_dir, "diagnostics"))
        text += f"\nRanking diagnostics:\n\n{to_markdown(table)}"
    comparisons = _bootstrap_against_baselines(
        runs, num_resamples=num_resamples, bootstrap_seed=bootstrap_seed
    )
    if comparisons:
        text += "\n" + _write_comparisons(os.path.join(out_dir, "bootstrap"), comparisons)
    if export:
        export_results(export, runs, comparisons)
        text += f"\nResults file: {export}\n"
    return text


def summarize(
    workdir: str, results: Mapping[int, Mapping[str, Any]], *, num_resamples: int = 10_000,
    bootstrap_seed: int = 0, export: str | None = None,
) -> str:
    """Tabulates the systems of one multi-seed directory (`tabulate`, written into workdir).

    Returns the markdown of the tables and bootstrap, for printing.
    """
    systems = systems_in(results)
    if not systems:
        raise ValueError(f"{workdir}: no seed reports {', '.join(SYSTEMS)} test metrics")
    runs = {system: SystemRuns(system, workdir, results) for system in systems}
    return tabulate(runs, workdir, num_resamples=num_resamples, bootstrap_seed=bootstrap_seed,
                    export=export)


def check_same_numbers(kept: SystemRuns, other: SystemRuns) -> None:
    for seed in sorted(set(kept.results) & set(other.results)):
        ours = system_metrics(kept.results[seed], kept.system)
        theirs = system_metrics(other.results[seed], other.system)
        for metric in TABLE_METRICS:
            if ours.get(metric) != theirs.get(metric):
                raise ValueError(
                    f"{kept.system} ran in both {kept.workdir} and {other.workdir} with "
                    f"different results (seed {seed}, {metric}: {ours.get(metric)} vs "
                    f"{theirs.get(metric)}); merge only the directory whose {kept.system} "
                    "belongs in the table"
                )


def merge_dirs(
    dirs: Sequence[str], out_dir: str, *, num_resamples: int = 10_000, bootstrap_seed: int = 0,
    export: str | None = None,
) -> str:
    """Tabulates the systems of several multi-seed directories as one table, into out_dir.

    Each system comes from the first directory that ran it; a later one that also ran it must
    agree on TABLE_METRICS at every seed both finished. Returns the markdown.
    """
    if not dirs:
        raise ValueError("--merge needs at least one multi-seed directory")
    found: dict[str, SystemRuns] = {}
    for directory in dirs:
        seeds = finished_seeds(directory)
        if not seeds:
            raise ValueError(f"{directory} has no finished seed")
        results = load_results(directory, seeds)
        for system in systems_in(results):
            runs = SystemRuns(system, directory, results)
            if system in found:
                check_same_numbers(found[system], runs)
            else:
                found[system] = runs
    if not found:
        raise ValueError(f"no seed of {', '.join(dirs)} reports {', '.join(SYSTEMS)} metrics")
    runs = {system: found[system] for system in SYSTEMS if system in found}
    return tabulate(runs, out_dir, num_resamples=num_resamples, bootstrap_seed=bootstrap_seed,
                    export=export)


def compare_dirs(
    dir_a: str, dir_b: str, out_dir: str, *, system: str | Sequence[str] = "sft",
    num_resamples: int = 10_000, bootstrap_seed: int = 0,
) -> str:
    """A system of dir_a vs one of dir_b over their common finished seeds: table and bootstrap.

    `system` is one SYSTEMS name for both directories or a pair (A's, B's). Writes
    out_dir/compare.md/.json; returns the markdown.
    """
    systems = (system,) if isinstance(system, str) else tuple(system)
    systems *= 2 if len(systems) == 1 else 1
    if len(systems) != 2 or any(s not in SYSTEMS for s in systems):
        raise ValueError(
            f"system must be one of {', '.join(SYSTEMS)} or a pair of them, got {system!r}"
        )
    seeds = sorted(set(finished_seeds(dir_a)) & set(finished_seeds(dir_b)))
    if not seeds:
        raise ValueError(f"{dir_a} and {dir_b} have no finished seed in common")
    dirs = {"A": (dir_a, systems[0]), "B": (dir_b, systems[1])}
    table = results_table(
        {name: [system_metrics(r, s) for r in load_results(d, seeds).values()]
         for name, (d, s) in dirs.items()},
        TABLE_METRICS,
    )
    pairs = {
        seed: tuple(user_metrics(os.path.join(seed_dir(d, seed), s, RANKINGS_FILE),
                                 BOOTSTRAP_METRICS)
                    for d, s in dirs.values())
        for seed in seeds
    }
    boot = paired_bootstrap_by_seed(
        pairs, num_resamples=num_resamples, bootstrap_seed=bootstrap_seed
    )
    label_a, label_b = (f"{d} ({s})" for d, s in dirs.values())
    named = systems[0] if systems[0] == systems[1] else f"{systems[0]} vs {systems[1]}"
    preface = (f"{named}, A = {dir_a}, B = {dir_b}, seeds {', '.join(map(str, seeds))}:\n\n"
               f"{to_markdown(table)}\n")
    return write_bootstrap(os.path.join(out_dir, "compare"), boot, label_a, label_b, preface)
