"""The business-vs-semantic trade-off plot: a reference front of swept points plus labelled points.

Matplotlib with the Agg backend (no display needed), written atomically as PNG and SVG.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from sgrec_jax.core.files import atomic_write  # noqa: E402
from sgrec_jax.evaluation.pareto import pareto_mask  # noqa: E402

FORMATS = ("png", "svg")


@dataclasses.dataclass(frozen=True)
class PlotPoint:
    """One system: mean (x, y) over seeds and their std (NaN or 0 = no error bar)."""

    label: str
    x: float
    y: float
    x_std: float = float("nan")
    y_std: float = float("nan")


def _errorbar(ax, points: Sequence[PlotPoint], **style) -> None:
    xs, ys = np.array([p.x for p in points]), np.array([p.y for p in points])
    xerr = np.nan_to_num(np.array([p.x_std for p in points]))
    yerr = np.nan_to_num(np.array([p.y_std for p in points]))
    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, capsize=3, elinewidth=0.8, **style)


def tradeoff_plot(
    path_stem: str | os.PathLike,
    reference: Sequence[PlotPoint],
    points: Sequence[PlotPoint],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    reference_label: str = "fixed-weight sweep",
) -> list[str]:
    """Plots `reference` (joined in the given order, its Pareto front shaded) and `points`.

    Writes <path_stem>.png and .svg; returns their paths.
    """
    if not reference and not points:
        raise ValueError("nothing to plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    try:
        if reference:
            _errorbar(ax, reference, fmt="o-", color="0.45", markersize=5, label=reference_label)
            for p in reference:
                ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(4, -10),
                            fontsize=7, color="0.35")
            front = np.array([(p.x, p.y) for p in reference])
            front = front[pareto_mask(front)]
            front = front[np.argsort(front[:, 0])]
            # The region the sweep's front dominates, down to the lowest point of the plot;
            # with step="pre" each y holds on the interval that ends at its x.
            floor = min(p.y for p in (*reference, *points))
            left = min(p.x for p in (*reference, *points))
            xs = np.concatenate([[left], front[:, 0]])
            ys = np.concatenate([front[:1, 1], front[:, 1]])
            ax.fill_between(xs, floor, ys, step="pre", color="0.85", alpha=0.5, linewidth=0)
        markers = "s^vDP*Xhp<>"
        for i, p in enumerate(points):
            _errorbar(ax, [p], fmt=markers[i % len(markers)], markersize=7, label=p.label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        paths = []
        for fmt in FORMATS:
            path = f"{os.fspath(path_stem)}.{fmt}"
            atomic_write(path, lambda f, fmt=fmt: fig.savefig(f, format=fmt))
            paths.append(path)
        return paths
    finally:
        plt.close(fig)
