"""Paired comparisons of saved test rankings: per-user metrics, bootstrap by seed, reports.

Two systems scored on the same test users are paired user by user: per-user values are
recomputed from each system's saved rankings (an .npz with users_u, targets_u, items_uk, as
sgrec_jax/train/evaluate.Rankings.save writes), and the paired bootstrap runs per seed
("seed_<s>") and, with several seeds, on the per-user values averaged over seeds ("seed_mean":
user sampling only, the seed noise averaged out).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np
from etils import epath

from sgrec_jax.core.files import atomic_write, read_npz, write_json
from sgrec_jax.evaluation.bootstrap import BootstrapResult, paired_bootstrap_metrics
from sgrec_jax.evaluation.metrics import PER_USER, ranking_metrics

BOOTSTRAP_METRICS = ("recall@10", "ndcg@10")
# benchmarks.md's four: the generator tables (multi-seed runner, recipe ablation) bootstrap all.
PROTOCOL_METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
SEED_MEAN = "seed_mean"


@dataclasses.dataclass(frozen=True)
class UserMetrics:
    """One system's test rankings as per-user metrics, sorted by user id.

    Attributes:
      users_u, targets_u: int [U] user ids (ascending) and their held-out items.
      values: metric name -> float64 [U].
    """

    users_u: np.ndarray
    targets_u: np.ndarray
    values: dict[str, np.ndarray]


def user_metrics(path: str | os.PathLike,
                 metrics: Sequence[str] = BOOTSTRAP_METRICS) -> UserMetrics:
    """Per-user `metrics` (recall@k / ndcg@k, k <= 10) recomputed from a saved rankings .npz."""
    if not epath.Path(path).exists():
        raise ValueError(f"{path} does not exist")
    rankings = read_npz(path)
    users_u, targets_u, items_uk = rankings["users_u"], rankings["targets_u"], rankings["items_uk"]
    order = np.argsort(users_u, kind="stable")
    users_u, targets_u, items_uk = users_u[order], targets_u[order], items_uk[order]
    if np.any(users_u[1:] == users_u[:-1]):
        raise ValueError(f"{path}: a user is ranked twice; need one test target per user")
    ks = sorted({int(m.rsplit("@", 1)[1]) for m in metrics})
    per_user = ranking_metrics(items_uk, targets_u, ks=ks)[PER_USER]
    return UserMetrics(users_u, targets_u, {m: per_user[m] for m in metrics})


def with_rewards(metrics: UserMetrics, path: str | os.PathLike,
                 names: Sequence[str]) -> UserMetrics:
    """`metrics` plus per-user reward values (e.g. "ecpm@10") from an .npz holding users_u and
    one [U] array per name (the rl stage's test_rewards.npz); names the file lacks are skipped.
    """
    if not epath.Path(path).exists():
        raise ValueError(f"{path} does not exist")
    rewards = read_npz(path)
    users_u = rewards["users_u"]
    found = {name: rewards[name] for name in names if name in rewards}
    order = np.argsort(users_u, kind="stable")
    if not np.array_equal(users_u[order], metrics.users_u):
        raise ValueError(f"{path}: its users are not those of the rankings")
    values = {**metrics.values, **{name: v[order] for name, v in found.items()}}
    return dataclasses.replace(metrics, values=values)


def _same_users(a: UserMetrics, b: UserMetrics, what: str) -> None:
    if not (np.array_equal(a.users_u, b.users_u) and np.array_equal(a.targets_u, b.targets_u)):
        raise ValueError(f"{what}: the rankings are not of the same test users and targets")


def paired_bootstrap_by_seed(
    pairs: Mapping[int, tuple[UserMetrics, UserMetrics]], *, num_resamples: int,
    bootstrap_seed: int,
) -> dict[str, dict[str, BootstrapResult]]:
    """A - B per seed ("seed_<s>") and, with several seeds, on per-user means ("seed_mean").

    Every metric of A's values is compared; B must have them too.
    """
    if not pairs:
        raise ValueError("no seeds to compare")
    first = next(iter(pairs.values()))[0]
    metrics = tuple(first.values)
    out = {}
    for s, (a, b) in pairs.items():
        _same_users(a, b, f"seed {s}")
        out[f"seed_{s}"] = paired_bootstrap_metrics(
            a.values, b.values, metrics=metrics, num_resamples=num_resamples,
            seed=bootstrap_seed,
        )
    if len(pairs) > 1:
        for s, (a, _) in pairs.items():
            _same_users(first, a, f"seeds {next(iter(pairs))} and {s}")
        mean_a, mean_b = (
            {m: np.mean([pair[i].values[m] for pair in pairs.values()], axis=0)
             for m in metrics}
            for i in (0, 1)
        )
        out[SEED_MEAN] = paired_bootstrap_metrics(
            mean_a, mean_b, metrics=metrics, num_resamples=num_resamples, seed=bootstrap_seed,
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


def bootstrap_json(
    results: Mapping[str, Mapping[str, BootstrapResult]], label_a: str, label_b: str
) -> dict:
    """{"a", "b", "results": {seeds: {metric: BootstrapResult fields}}}."""
    return {
        "a": label_a, "b": label_b,
        "results": {
            seeds: {m: dataclasses.asdict(r) for m, r in by_metric.items()}
            for seeds, by_metric in results.items()
        },
    }


def write_bootstrap(
    path_stem: str,
    results: Mapping[str, Mapping[str, BootstrapResult]],
    label_a: str,
    label_b: str,
    preface: str = "",
) -> str:
    """Writes <path_stem>.md (preface + bootstrap_markdown) and .json; returns the markdown."""
    text = preface + bootstrap_markdown(results, label_a, label_b)
    atomic_write(path_stem + ".md", lambda f: f.write(text.encode()))
    write_json(path_stem + ".json", bootstrap_json(results, label_a, label_b))
    return text
