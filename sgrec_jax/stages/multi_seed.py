"""Runs an experiment over several seeds, tabulates mean ± std, and bootstraps system differences.

    python -m experiments.multi_seed --config=experiments/configs/NAME.py[:ARG] --workdir=DIR \
        --seeds=0,1,2 [--config.FIELD=VALUE ...]
    python -m experiments.multi_seed --compare=DIR_A,DIR_B --workdir=OUT [--system=sft[,sasrec]]

Seed s runs the pipeline in DIR/seed_<s> with config.seed = s, which seeds the model's
initialisation, dropout, batch order, the validation subset and, for learned SIDs, the
quantizer. The data stay fixed (data.bid_seed is not varied; the split is deterministic), so
every seed is scored on the same test users and systems can be paired user by user. A seed
whose results.json exists is skipped, so rerunning the command resumes cell by cell (a seed
stopped midway resumes from its checkpoints); a finished seed must have the same config, up to
run-control fields such as sft.max_steps_per_run.

DIR receives table.md/.csv (mean ± std over seeds per system: "sft", the generator, and
"sasrec" when that stage ran) and, when both systems ran, bootstrap.md/.json: a paired
bootstrap over test users of sft - sasrec on recall@10 and ndcg@10 for each seed, and for the
per-user values averaged over seeds ("seed_mean": user sampling only, the seed noise averaged
out). Per-user values are recomputed from each system's saved test_rankings.npz.

--compare pairs a system of one multi-seed directory with a system of another by seed (those both
have finished) and user, and writes OUT/compare.md/.json (table of both plus the bootstrap A - B).
--system names the system of both directories, or of A and B in turn: --system=sft,sasrec
compares the generator of DIR_A with the SASRec baseline of DIR_B (each config's own run).

experiments/multi_seed.py is the command line; the logic lives here so tests and other runners
can import it (absl flags may be defined once per process).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ml_collections import ConfigDict

from sgrec_jax.evaluation.paired import (
    BOOTSTRAP_METRICS,
    paired_bootstrap_by_seed,
    user_metrics,
    write_bootstrap,
)
from sgrec_jax.evaluation.tables import results_table, to_markdown, write_table
from sgrec_jax.stages.pipeline import RESULTS_FILE
from sgrec_jax.stages.runs import read_json, run_or_load

# System name -> prefix of its metrics in results.json (the sasrec stage reports "sasrec/...").
SYSTEMS = {"sft": "", "sasrec": "sasrec/"}
TABLE_METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "coverage@10", "valid_rate")
RANKINGS_FILE = "test_rankings.npz"



def seed_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, f"seed_{seed}")


def run_seeds(config: ConfigDict, workdir: str, seeds: Sequence[int]) -> dict[int, dict]:
    """Runs the pipeline for each seed not yet finished; returns every seed's results."""
    workdir = os.path.abspath(workdir)  # Orbax rejects relative checkpoint paths.
    results = {}
    for seed in seeds:
        seed_config = config.copy_and_resolve_references()
        seed_config.seed = seed
        results[seed] = run_or_load(seed_config, seed_dir(workdir, seed), f"seed {seed}")
    return results


def load_results(workdir: str, seeds: Sequence[int]) -> dict[int, dict]:
    """results.json of each seed; a seed without one is an error."""
    results = {}
    for seed in seeds:
        path = os.path.join(seed_dir(workdir, seed), RESULTS_FILE)
        results[seed] = read_json(path)
        if results[seed] is None:
            raise ValueError(f"{path} does not exist: seed {seed} has not finished")
    return results


def finished_seeds(workdir: str) -> list[int]:
    """The seeds of `workdir`'s seed_<s> folders that hold a results.json, ascending."""
    if not os.path.isdir(workdir):
        raise ValueError(f"{workdir} is not a directory")
    seeds = []
    for name in os.listdir(workdir):
        seed = name.removeprefix("seed_")
        if seed != name and seed.isdigit() and os.path.exists(
            os.path.join(workdir, name, RESULTS_FILE)
        ):
            seeds.append(int(seed))
    return sorted(seeds)


def systems_in(results: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """The systems (SYSTEMS order) whose recall@10 every seed reports."""
    return [
        system for system, prefix in SYSTEMS.items()
        if all(f"{prefix}recall@10" in r for r in results.values())
    ]


def system_metrics(result: Mapping[str, Any], system: str) -> dict[str, Any]:
    """A seed's TABLE_METRICS for one system, without its prefix."""
    prefix = SYSTEMS[system]
    return {m: result[prefix + m] for m in TABLE_METRICS if prefix + m in result}


def summarize(
    workdir: str, results: Mapping[int, Mapping[str, Any]], *, num_resamples: int = 10_000,
    bootstrap_seed: int = 0,
) -> str:
    """Writes DIR/table.md/.csv and (both systems present) DIR/bootstrap.md/.json.

    Returns the markdown of both, for printing.
    """
    systems = systems_in(results)
    if not systems:
        raise ValueError(f"{workdir}: no seed reports {', '.join(SYSTEMS)} test metrics")
    table = results_table(
        {s: [system_metrics(r, s) for r in results.values()] for s in systems}, TABLE_METRICS
    )
    write_table(table, os.path.join(workdir, "table"))
    text = f"Seeds {', '.join(map(str, results))}:\n\n{to_markdown(table)}"
    if systems == list(SYSTEMS):
        pairs = {
            seed: tuple(user_metrics(os.path.join(seed_dir(workdir, seed), s, RANKINGS_FILE),
                                 BOOTSTRAP_METRICS)
                        for s in systems)
            for seed in results
        }
        boot = paired_bootstrap_by_seed(
            pairs, num_resamples=num_resamples, bootstrap_seed=bootstrap_seed
        )
        text += "\n" + write_bootstrap(os.path.join(workdir, "bootstrap"), boot, *systems)
    return text


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
