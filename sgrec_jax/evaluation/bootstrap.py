"""Paired bootstrap over users: is system A's mean per-user metric really above system B's?

Per user u the difference d_u = a_u - b_u; a resample draws n users with replacement and takes
the mean of their d. Reported: the observed mean difference, the percentile confidence interval
of the resampled means, and two bootstrap p-values (resampled means, not a shifted null):
  p_value_one_sided = fraction of resamples with mean difference <= 0 (how often A fails to
    beat B; small means A > B),
  p_value_two_sided = min(1, 2 * min(fraction <= 0, fraction >= 0)).
Identical systems give d = 0 everywhere: CI [0, 0] and both p-values 1.

Speed: a resample's mean depends only on how many times each distinct row of d is drawn, and
those counts are multinomial(n, row frequencies). Ranking metrics take few distinct values
(the pair of target ranks decides them: at most (K + 1)**2 rows), so 10,000 resamples of 22k
users cost a multinomial over ~100 categories (milliseconds). Data with many distinct rows
falls back to drawing user indices in chunks. Several metrics are resampled jointly (the same
users in each resample) via distinct rows of the [n, M] difference matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

# Above this many distinct difference rows, index sampling is cheaper than the multinomial
# (which costs one binomial draw per category per resample).
_MAX_CATEGORIES = 2048
_CHUNK_ELEMENTS = 1 << 23  # Indices drawn per chunk in the fallback (32 MiB of int32).


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """A vs B on one metric; differences are A - B. See the module docstring for p-values."""

    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value_one_sided: float
    p_value_two_sided: float
    confidence: float
    num_users: int
    num_resamples: int


def _resampled_means(
    diff_um: np.ndarray, num_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """float64 [R, M]: mean of d over each of R resamples of the n users."""
    n = len(diff_um)
    rows_cm, counts_c = np.unique(diff_um, axis=0, return_counts=True)
    if len(rows_cm) <= _MAX_CATEGORIES:
        draws_rc = rng.multinomial(n, counts_c / n, size=num_resamples)
        return draws_rc @ rows_cm / n
    means_rm = np.empty((num_resamples, diff_um.shape[1]))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, num_resamples, chunk):
        size = min(chunk, num_resamples - start)
        users = rng.integers(0, n, size=(size, n), dtype=np.int32)
        means_rm[start : start + size] = diff_um[users].mean(axis=1)
    return means_rm


def paired_bootstrap_metrics(
    per_user_a: Mapping[str, np.ndarray],
    per_user_b: Mapping[str, np.ndarray],
    *,
    metrics: Sequence[str] | None = None,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, BootstrapResult]:
    """Paired bootstrap of several per-user metrics at once (same resampled users for all).

    per_user_a/b: metric name -> float [n] per-user values, users in the same order in both
    (e.g. ranking_metrics(...)["per_user"]). metrics: which names (default: all of A's).
    """
    names = list(per_user_a if metrics is None else metrics)
    if not names:
        raise ValueError("no metrics to compare")
    if num_resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(
            f"need num_resamples >= 1 and 0 < confidence < 1, got {num_resamples}, {confidence}"
        )
    columns_a, columns_b = [], []
    for name in names:
        if name not in per_user_a or name not in per_user_b:
            raise ValueError(f"metric {name!r} is missing from one of the two systems")
        a, b = np.asarray(per_user_a[name], np.float64), np.asarray(per_user_b[name], np.float64)
        if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
            raise ValueError(
                f"metric {name!r}: need two equal-length, non-empty per-user vectors, got "
                f"shapes {a.shape} and {b.shape}"
            )
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ValueError(f"metric {name!r} has non-finite per-user values")
        columns_a.append(a)
        columns_b.append(b)
    if len({len(a) for a in columns_a}) > 1:
        raise ValueError(f"metrics {names} have different numbers of users")
    a_um, b_um = np.stack(columns_a, 1), np.stack(columns_b, 1)
    diff_um = a_um - b_um
    means_rm = _resampled_means(diff_um, num_resamples, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0
    low_m, high_m = np.quantile(means_rm, [tail, 1.0 - tail], axis=0)
    at_most_zero_m = np.mean(means_rm <= 0.0, axis=0)
    at_least_zero_m = np.mean(means_rm >= 0.0, axis=0)
    return {
        name: BootstrapResult(
            mean_a=float(a_um[:, m].mean()),
            mean_b=float(b_um[:, m].mean()),
            mean_diff=float(diff_um[:, m].mean()),
            ci_low=float(low_m[m]),
            ci_high=float(high_m[m]),
            p_value_one_sided=float(at_most_zero_m[m]),
            p_value_two_sided=float(min(1.0, 2.0 * min(at_most_zero_m[m], at_least_zero_m[m]))),
            confidence=confidence,
            num_users=len(diff_um),
            num_resamples=num_resamples,
        )
        for m, name in enumerate(names)
    }


def paired_bootstrap(
    a_u: np.ndarray,
    b_u: np.ndarray,
    *,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Paired bootstrap of one per-user metric: A's values a_u [n] against B's b_u [n]."""
    return paired_bootstrap_metrics(
        {"metric": a_u}, {"metric": b_u},
        num_resamples=num_resamples, confidence=confidence, seed=seed,
    )["metric"]
