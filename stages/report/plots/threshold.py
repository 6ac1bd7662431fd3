"""Where upcycling and training an MoE from scratch tie, over (D1, D2): paper Fig. 1 right."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch, Rectangle

from stages.core.kinds import UPCYCLED
from stages.laws.crossing import log_gap
from stages.laws.fitted import Laws
from stages.laws.forms import get_law
from stages.laws.roles import SCRATCH, UPCYCLE
from stages.report.figure_specs import FIGURE_SPECS
from stages.report.plots.common import Fits, fitted_range, log_axis, log_grid, need_fits, require_runs
from stages.report.plots.labels import count_label, flagged_fits, wrap

# How far beyond the fitted range the threshold figure draws the laws (x10 each side, log axes): far enough to
# show where the tie heads, near enough that the data range stays readable (the planner refuses beyond 100x).
SHOWN_EXTRAPOLATION = 10.0


def _shade_outside(ax: plt.Axes, x: tuple[float, float], y: tuple[float, float], inside: Rectangle) -> None:
    """Grey over the part of the axes outside ``inside`` (the fitted range), as four strips that never overlap."""
    (x0, x1), (y0, y1) = x, y
    a, c = inside.get_x(), inside.get_y()
    b, d = a + inside.get_width(), c + inside.get_height()
    for left, right, bottom, top in ((x0, a, y0, y1), (b, x1, y0, y1), (a, b, y0, c), (a, b, d, y1)):
        if right > left and top > bottom:
            ax.add_patch(Rectangle((left, bottom), right - left, top - bottom, fc="0.5", alpha=0.12, lw=0, zorder=1.5))


def threshold(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Paper Fig. 1 right: where upcycling and training from scratch tie, over (D1, D2), per N1 and framing.

    Drawn as the zero contour of log L_upcycle - log L_scratch on a (D1, D2) grid rather than as one root per D1,
    so that laws that cross more than once show every crossing, and the shaded side says who wins. The plane
    reaches ``SHOWN_EXTRAPOLATION`` times beyond the upcycled fit's (D1, D2) range on each side; there the tie is
    dashed and the plane greyed as extrapolated, and it is solid only over the range the law was fitted on.
    """
    up_fit, scratch_fit = need_fits(fits, "threshold")
    up = require_runs(runs, UPCYCLED, "threshold")
    joint = "N1" in get_law(up_fit["law"]).columns
    sizes = sorted(runs["N_dense"].unique()) if joint else sorted(up["N_dense"].unique())
    ratio = float((up["N_active"] / up["N_dense"]).median())
    laws = Laws({UPCYCLE: up_fit, SCRATCH: scratch_fit})
    (d1_lo, d1_hi), (d2_lo, d2_hi) = fitted_range(up_fit, "D1", up), fitted_range(up_fit, "D2", up)
    d1_grid = log_grid(d1_lo / SHOWN_EXTRAPOLATION, d1_hi * SHOWN_EXTRAPOLATION, 121, (d1_lo, d1_hi))
    d2_grid = log_grid(d2_lo / SHOWN_EXTRAPOLATION, d2_hi * SHOWN_EXTRAPOLATION, 161, (d2_lo, d2_hi))
    d1_mesh, d2_mesh = np.meshgrid(d1_grid, d2_grid)
    models = runs.groupby("N_dense")["model"].first().to_dict() if "model" in runs.columns else {}
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.8), sharey=True)
    for ax, framing in zip(axes, ("same extra tokens", "same total compute (sunk dense cost included)"), strict=True):
        fitted = Rectangle((d1_lo, d2_lo), d1_hi - d1_lo, d2_hi - d2_lo, fill=False, ec="0.2", lw=1, zorder=2.5)
        ax.add_patch(fitted)
        for i, n1 in enumerate(sizes):
            extra = 0.0 if framing == "same extra tokens" else d1_mesh.ravel() / ratio  # sunk compute as tokens
            with np.errstate(all="ignore"):
                gap = log_gap(laws, n1, d1_mesh.ravel(), d2_mesh.ravel(), extra).reshape(d1_mesh.shape)
            ax.contourf(d1_grid, d2_grid, np.where(gap < 0, 1.0, 0.0), levels=[0.5, 1.5], colors=[f"C{i}"], alpha=0.15)
            if np.nanmin(gap) < 0 < np.nanmax(gap):
                tie = ax.contour(d1_grid, d2_grid, gap, levels=[0.0], colors=[f"C{i}"], linewidths=1.8, zorder=3)
                tie.set_clip_path(fitted)  # solid over the fitted range only
                for path in tie.get_paths():  # the whole tie dashed underneath: the extrapolated part shows
                    ax.add_patch(PathPatch(path, fill=False, ec=f"C{i}", ls="--", lw=1.1, zorder=2.8))
        _shade_outside(ax, (d1_grid[0], d1_grid[-1]), (d2_grid[0], d2_grid[-1]), fitted)
        ax.text(
            0.02,
            0.98,
            "extrapolated\n(grey: outside the fitted range)",
            transform=ax.transAxes,
            va="top",
            fontsize=7,
            color="0.25",
            bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 1.5},
            zorder=4,
        )
        ax.scatter(up["D1"], up["D2"], color="k", s=14, zorder=4)
        ax.set(xscale="log", yscale="log", xlabel="sunk dense tokens D1", title=framing)
        ax.set_xlim(d1_grid[0], d1_grid[-1])
        ax.set_ylim(d2_grid[0], d2_grid[-1])
        ax.title.set_fontsize(9)
        log_axis(ax.xaxis, count_label)
    log_axis(axes[0].yaxis, count_label)
    axes[0].set_ylabel("upcycled tokens D2")
    handles: list[Any] = [
        Line2D([], [], color=f"C{i}", lw=1.8, label=f"tie D2*, {_size_label(n1, models)}: solid where fitted")
        for i, n1 in enumerate(sizes)
    ]
    handles += [
        Line2D([], [], color="0.35", ls="--", lw=1.1, label="tie D2*, extrapolated (dashed)"),
        Patch(color="C0" if len(sizes) == 1 else "0.5", alpha=0.15, label="shaded: upcycling wins"),
        Patch(fc="0.5", alpha=0.25, ec="0.2", label="fitted range (box); grey outside: extrapolated"),
        Line2D([], [], color="k", marker="o", ls="", ms=4, label="upcycled runs"),
    ]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=3, frameon=False)
    warning = flagged_fits(fits, FIGURE_SPECS["threshold"].fits)
    if warning:
        fig.suptitle(wrap(f"flagged fits: {warning}", 150), fontsize=8)
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    return fig


def _size_label(n1: float, models: dict[float, str]) -> str:
    """ "s (N1 = 131K)": a dense size by its grid name and parameter count."""
    count = f"N1 = {count_label(n1)}"
    return f"{models[n1]} ({count})" if n1 in models else count
