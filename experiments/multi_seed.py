r"""Runs an experiment over several seeds, tabulates mean ± std, and bootstraps system differences.

    python -m experiments.multi_seed --config=experiments/configs/NAME.py[:ARG] --workdir=DIR \
        --seeds=0,1,2 [--config.FIELD=VALUE ...]
    python -m experiments.multi_seed --compare=DIR_A,DIR_B --workdir=OUT [--system=sft]

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

--compare pairs one system (--system) of two multi-seed directories by seed (those both have
finished) and user, and writes OUT/compare.md/.json (table of both plus the bootstrap A - B).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from sgrec_jax.core.files import atomic_write, write_json
from sgrec_jax.evaluation.bootstrap import BootstrapResult, paired_bootstrap_metrics
from sgrec_jax.evaluation.metrics import PER_USER, ranking_metrics
from sgrec_jax.evaluation.tables import results_table, to_markdown, write_table
from sgrec_jax.train.cli import quiet_library_logs, run_or_exit
from sgrec_jax.train.pipeline import CONFIG_FILE, RESULTS_FILE, run_pipeline

# System name -> prefix of its metrics in results.json (the sasrec stage reports "sasrec/...").
SYSTEMS = {"sft": "", "sasrec": "sasrec/"}
TABLE_METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "coverage@10", "valid_rate")
BOOTSTRAP_METRICS = ("recall@10", "ndcg@10")
RANKINGS_FILE = "test_rankings.npz"
SEED_MEAN = "seed_mean"
# Config fields that steer a run but not its results: they may change between sessions.
RUN_CONTROL_FIELDS = ("max_steps_per_run", "log_every", "keep_checkpoints")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Multi-seed directory (one seed_<s> folder per seed); with --compare, "
    "where compare.md/.json go."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run and tabulate.")
_COMPARE = flags.DEFINE_list("compare", None, "DIR_A,DIR_B: compare two multi-seed directories.")
_SYSTEM = flags.DEFINE_enum("system", "sft", list(SYSTEMS), "The system --compare compares.")
_NUM_RESAMPLES = flags.DEFINE_integer("num_resamples", 10_000, "Bootstrap resamples.")
_BOOTSTRAP_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "Seeds the bootstrap resampling.")
flags.mark_flag_as_required("workdir")


@dataclasses.dataclass(frozen=True)
class UserMetrics:
    """One system's test rankings as per-user metrics, sorted by user id.

    Attributes:
      users_u, targets_u: int [U] user ids (ascending) and their held-out items.
      values: metric name -> float64 [U] (BOOTSTRAP_METRICS).
    """

    users_u: np.ndarray
    targets_u: np.ndarray
    values: dict[str, np.ndarray]


def seed_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, f"seed_{seed}")


def _read_json(path: str) -> Any | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_same_config(directory: str, config: ConfigDict) -> None:
    """A finished seed must come from this config, or the table would mix two experiments."""
    stored = _read_json(os.path.join(directory, CONFIG_FILE))
    if stored is None:
        raise ValueError(f"{directory} has {RESULTS_FILE} but no {CONFIG_FILE}")
    current = json.loads(json.dumps(config.to_dict()))  # Tuples become lists, as stored.
    old, new = _flatten(stored), _flatten(current)
    changed = sorted(
        k for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and k.rsplit(".", 1)[-1] not in RUN_CONTROL_FIELDS
    )
    if changed:
        raise ValueError(
            f"{directory} finished with another config (fields {', '.join(changed)} differ); "
            "pass the same config and overrides, or use another --workdir"
        )


def run_seeds(config: ConfigDict, workdir: str, seeds: Sequence[int]) -> dict[int, dict]:
    """Runs the pipeline for each seed not yet finished; returns every seed's results."""
    workdir = os.path.abspath(workdir)  # Orbax rejects relative checkpoint paths.
    results = {}
    for seed in seeds:
        seed_config = config.copy_and_resolve_references()
        seed_config.seed = seed
        directory = seed_dir(workdir, seed)
        finished = _read_json(os.path.join(directory, RESULTS_FILE))
        if finished is None:
            logging.info("=== seed %d: running in %s ===", seed, directory)
            results[seed] = run_pipeline(seed_config, directory)
        else:
            _check_same_config(directory, seed_config)
            logging.info("=== seed %d: finished, skipping (%s) ===", seed, directory)
            results[seed] = finished
    return results


def load_results(workdir: str, seeds: Sequence[int]) -> dict[int, dict]:
    """results.json of each seed; a seed without one is an error."""
    results = {}
    for seed in seeds:
        path = os.path.join(seed_dir(workdir, seed), RESULTS_FILE)
        results[seed] = _read_json(path)
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


def user_metrics(path: str) -> UserMetrics:
    """Per-user recall@10 / ndcg@10 recomputed from a saved test_rankings.npz."""
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist")
    with np.load(path) as rankings:
        users_u, targets_u, items_uk = (
            rankings["users_u"], rankings["targets_u"], rankings["items_uk"]
        )
    order = np.argsort(users_u, kind="stable")
    users_u, targets_u, items_uk = users_u[order], targets_u[order], items_uk[order]
    if np.any(users_u[1:] == users_u[:-1]):
        raise ValueError(f"{path}: a user is ranked twice; need one test target per user")
    per_user = ranking_metrics(items_uk, targets_u, ks=(10,))[PER_USER]
    return UserMetrics(users_u, targets_u, {m: per_user[m] for m in BOOTSTRAP_METRICS})


def _same_users(a: UserMetrics, b: UserMetrics, what: str) -> None:
    if not (np.array_equal(a.users_u, b.users_u) and np.array_equal(a.targets_u, b.targets_u)):
        raise ValueError(f"{what}: the rankings are not of the same test users and targets")


def paired_bootstrap_by_seed(
    pairs: Mapping[int, tuple[UserMetrics, UserMetrics]], *, num_resamples: int,
    bootstrap_seed: int,
) -> dict[str, dict[str, BootstrapResult]]:
    """A - B per seed ("seed_<s>") and, with several seeds, on per-user means ("seed_mean")."""
    out = {}
    for s, (a, b) in pairs.items():
        _same_users(a, b, f"seed {s}")
        out[f"seed_{s}"] = paired_bootstrap_metrics(
            a.values, b.values, metrics=BOOTSTRAP_METRICS, num_resamples=num_resamples,
            seed=bootstrap_seed,
        )
    if len(pairs) > 1:
        first = next(iter(pairs.values()))[0]
        for s, (a, _) in pairs.items():
            _same_users(first, a, f"seeds {next(iter(pairs))} and {s}")
        mean_a, mean_b = (
            {m: np.mean([pair[i].values[m] for pair in pairs.values()], axis=0)
             for m in BOOTSTRAP_METRICS}
            for i in (0, 1)
        )
        out[SEED_MEAN] = paired_bootstrap_metrics(
            mean_a, mean_b, metrics=BOOTSTRAP_METRICS, num_resamples=num_resamples,
            seed=bootstrap_seed,
        )
    return out


def bootstrap_markdown(
    results: Mapping[str, Mapping[str, BootstrapResult]], label_a: str, label_b: str
) -> str:
    """One row per (seed, metric): means, difference A - B, its CI and the bootstrap p-values."""
    first = next(iter(next(iter(results.values())).values()))
    lines = [
        f"Paired bootstrap over test users, A = {label_a}, B = {label_b}: "
        f"{first.num_resamples} resamples, {first.confidence:.0%} percentile CI of mean(A - B); "
        "p one-sided = P(mean diff <= 0).",
        "",
        "| seeds | metric | A | B | A - B | CI | p one-sided | p two-sided | users |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seeds, by_metric in results.items():
        for metric, r in by_metric.items():
            lines.append(
                f"| {seeds} | {metric} | {r.mean_a:.4f} | {r.mean_b:.4f} | {r.mean_diff:+.4f} | "
                f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {r.p_value_one_sided:.4f} | "
                f"{r.p_value_two_sided:.4f} | {r.num_users} |"
            )
    return "\n".join(lines) + "\n"


def _write_bootstrap(
    path_stem: str,
    results: Mapping[str, Mapping[str, BootstrapResult]],
    label_a: str,
    label_b: str,
    preface: str = "",
) -> str:
    """Writes <path_stem>.md (preface + bootstrap_markdown) and .json; returns the markdown."""
    text = preface + bootstrap_markdown(results, label_a, label_b)
    atomic_write(path_stem + ".md", lambda f: f.write(text.encode()))
    write_json(path_stem + ".json", {
        "a": label_a, "b": label_b,
        "results": {
            seeds: {m: dataclasses.asdict(r) for m, r in by_metric.items()}
            for seeds, by_metric in results.items()
        },
    })
    return text


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
            seed: tuple(user_metrics(os.path.join(seed_dir(workdir, seed), s, RANKINGS_FILE))
                        for s in systems)
            for seed in results
        }
        boot = paired_bootstrap_by_seed(
            pairs, num_resamples=num_resamples, bootstrap_seed=bootstrap_seed
        )
        text += "\n" + _write_bootstrap(os.path.join(workdir, "bootstrap"), boot, *systems)
    return text


def compare_dirs(
    dir_a: str, dir_b: str, out_dir: str, *, system: str = "sft", num_resamples: int = 10_000,
    bootstrap_seed: int = 0,
) -> str:
    """`system` of dir_a vs dir_b over their common finished seeds: table and paired bootstrap.

    Writes out_dir/compare.md/.json; returns the markdown.
    """
    seeds = sorted(set(finished_seeds(dir_a)) & set(finished_seeds(dir_b)))
    if not seeds:
        raise ValueError(f"{dir_a} and {dir_b} have no finished seed in common")
    dirs = {"A": dir_a, "B": dir_b}
    table = results_table(
        {name: [system_metrics(r, system) for r in load_results(d, seeds).values()]
         for name, d in dirs.items()},
        TABLE_METRICS,
    )
    pairs = {
        seed: tuple(user_metrics(os.path.join(seed_dir(d, seed), system, RANKINGS_FILE))
                    for d in dirs.values())
        for seed in seeds
    }
    boot = paired_bootstrap_by_seed(
        pairs, num_resamples=num_resamples, bootstrap_seed=bootstrap_seed
    )
    label_a, label_b = f"{dir_a} ({system})", f"{dir_b} ({system})"
    preface = (f"{system}, A = {dir_a}, B = {dir_b}, seeds {', '.join(map(str, seeds))}:\n\n"
               f"{to_markdown(table)}\n")
    return _write_bootstrap(os.path.join(out_dir, "compare"), boot, label_a, label_b, preface)


def _parse_seeds(values: Sequence[str]) -> list[int]:
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--seeds must be integers, got {','.join(values)}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must be distinct integers >= 0, got {','.join(values)}")
    return seeds


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    workdir = _WORKDIR.value
    options = {"num_resamples": _NUM_RESAMPLES.value, "bootstrap_seed": _BOOTSTRAP_SEED.value}
    def run() -> str:
        if _COMPARE.value is not None:
            if _CONFIG.value is not None or len(_COMPARE.value) != 2:
                raise ValueError("--compare takes exactly DIR_A,DIR_B and no --config")
            dir_a, dir_b = _COMPARE.value
            return compare_dirs(dir_a, dir_b, workdir, system=_SYSTEM.value, **options)
        if _CONFIG.value is None:
            raise ValueError("--config is required (or --compare=DIR_A,DIR_B)")
        results = run_seeds(_CONFIG.value, workdir, _parse_seeds(_SEEDS.value))
        return summarize(workdir, results, **options)

    text = run_or_exit(run)
    print(text)


if __name__ == "__main__":
    app.run(main)
