"""Two-objective trade-offs: Pareto front, hypervolume, min-max normalisation (both maximised).

Points are float [n, 2] (e.g. business eCPM@10, semantic score@10), higher is better in both.
A point dominates another when it is >= in both objectives and > in at least one; equal points
do not dominate each other, so duplicates on the front are all kept. The hypervolume of a set is
the area of the region that some point of the set dominates and that dominates the reference
point. The protocol's reference point is the componentwise minimum over all points of one table
(`reference_point`), so hypervolumes compare within a table only.
"""

from __future__ import annotations

import numpy as np


def _points(points_n2: np.ndarray) -> np.ndarray:
    points_n2 = np.asarray(points_n2, np.float64)
    if points_n2.ndim != 2 or points_n2.shape[1] != 2:
        raise ValueError(f"need points of shape [n, 2], got {points_n2.shape}")
    if not np.all(np.isfinite(points_n2)):
        raise ValueError("points must be finite")
    return points_n2


def reference_point(points_n2: np.ndarray) -> np.ndarray:
    """float64 [2]: the componentwise minimum of the points (the protocol's reference)."""
    points_n2 = _points(points_n2)
    if len(points_n2) == 0:
        raise ValueError("no points to take a reference point from")
    return points_n2.min(0)


def pareto_mask(points_n2: np.ndarray) -> np.ndarray:
    """bool [n]: True where no other point dominates the point (the Pareto front)."""
    p = _points(points_n2)
    at_least_nm2 = p[None, :, :] >= p[:, None, :]  # [i, j]: j >= i per objective
    better_nm = at_least_nm2.all(-1) & (p[None, :, :] > p[:, None, :]).any(-1)
    return ~better_nm.any(1)


def hypervolume_2d(points_n2: np.ndarray, reference_2: np.ndarray) -> float:
    """Area dominated by the points and dominating reference_2 (points below it add nothing).

    Sweeps the front in decreasing first objective, adding the strip each point's second
    objective raises above the previous best: O(n log n), exact.
    """
    p = _points(points_n2)
    ref = np.asarray(reference_2, np.float64)
    if ref.shape != (2,) or not np.all(np.isfinite(ref)):
        raise ValueError(f"need a finite reference point of shape [2], got {reference_2!r}")
    p = p[np.all(p > ref, axis=1)]
    area, best_y = 0.0, ref[1]
    for x, y in p[np.lexsort((-p[:, 1], -p[:, 0]))]:
        if y > best_y:
            area += (x - ref[0]) * (y - best_y)
            best_y = y
    return float(area)


def minmax_normalise(values_n2: np.ndarray, points_n2: np.ndarray) -> np.ndarray:
    """float64 [n, 2]: values mapped by the range of points_n2 per objective to [0, 1].

    An objective on which all points are equal maps to 0 (it separates nothing).
    """
    values_n2, p = _points(values_n2), _points(points_n2)
    low, high = reference_point(p), p.max(0)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (values_n2 - low) / span, 0.0)


def front_distance(points_n2: np.ndarray, front_m2: np.ndarray) -> np.ndarray:
    """float64 [n]: each point's IGD+ distance to a front (both objectives maximised).

    d(p) = min_f ||max(f - p, 0)||_2 over the front's points f: how far p must move up to reach
    the region some front point dominates or equals. 0 when no front point dominates p (on or
    beyond the front). Measure both in the same (e.g. min-max normalised) units.
    """
    p, f = _points(points_n2), _points(front_m2)
    if len(f) == 0:
        raise ValueError("the front has no points")
    shortfall_nm2 = np.maximum(f[None, :, :] - p[:, None, :], 0.0)
    return np.sqrt((shortfall_nm2 ** 2).sum(-1)).min(1)
