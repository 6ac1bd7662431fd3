"""Where an MoE from scratch overtakes upcycling, D2* over D1: paper Fig. 1 right."""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

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


# One shading per meaning, the same in both panels: who the laws predict wins at (D1, D2), and where they say
# nothing (a predicted loss that overflows: an interaction exponent far outside its fitted range).
UPCYCLE_WINS, SCRATCH_WINS = "#c6dbef", "#fdd9b5"  # light blue, light orange
UNDEFINED_HATCH = "////"
REGIONS = {
    "upcycle": "upcycling predicted better",
    "scratch": "MoE from scratch predicted better",
    "undefined": "laws undefined (predicted loss not finite)",
}


def first_tie(d2_grid: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Per column of ``gap`` (rows: ``d2_grid``; columns: D1), the smallest D2 where the gap turns from < 0
    (upcycling better) to >= 0 (scratch better), interpolated in log D2; NaN where it never does.

    This is the paper's threshold D2*: upcycling's head start used up. The zero contour of the gap holds other
    crossings too: at tiny D2 the upcycled law's D2 term diverges (it has no D2 -> 0 limit at the parent's loss),
    so scratch "wins" there and the contour turns back on itself, and a floor fitted near zero can let the laws
    cross again far above D2*. Those are artefacts of the laws' forms, not thresholds; the shading still shows
    them, the line does not, so that it is one D2* per D1 and never loops back.
    """
    out = np.full(gap.shape[1], np.nan)
    log_d2 = np.log(d2_grid)
    for j in range(gap.shape[1]):
        g = gap[:, j]
        turns = np.flatnonzero((g[:-1] < 0) & (g[1:] >= 0))
        if turns.size:
            i = int(turns[0])
            t = g[i] / (g[i] - g[i + 1])
            out[j] = math.exp(log_d2[i] + t * (log_d2[i + 1] - log_d2[i]))
    return out


def _inside(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (values >= lo * (1 - 1e-9)) & (values <= hi * (1 + 1e-9))


def _regions(ax: plt.Axes, d1_grid: np.ndarray, d2_grid: np.ndarray, gap: np.ndarray) -> set[str]:
    """Shade who wins over the plane and hatch where the laws are undefined; the regions drawn. Each region is
    its own filled contour of the gap, drawn only when present: a shade in the figure is a region on the plane."""
    present = set()
    finite = np.isfinite(gap)
    span = float(np.max(np.abs(gap[finite]))) + 1.0 if finite.any() else 1.0
    for region, levels, colour in (("upcycle", [-span, 0.0], UPCYCLE_WINS), ("scratch", [0.0, span], SCRATCH_WINS)):
        inside = (gap[finite] < 0) if region == "upcycle" else (gap[finite] >= 0)
        if inside.any():
            present.add(region)
            ax.contourf(d1_grid, d2_grid, np.where(finite, gap, np.nan), levels=levels, colors=[colour], zorder=0.5)
    if not finite.all():
        present.add("undefined")
        with plt.rc_context({"hatch.color": "0.55", "hatch.linewidth": 0.6}):
            ax.contourf(
                d1_grid,
                d2_grid,
                (~finite).astype(float),
                levels=[0.5, 1.5],
                colors="none",
                hatches=[UNDEFINED_HATCH],
                zorder=0.6,
            )
    return present


def _tie(
    ax: plt.Axes,
    d1_grid: np.ndarray,
    d2_star: np.ndarray,
    box: tuple[tuple[float, float], ...],
    n1: float,
    color: Any,
    lw: float,
) -> set[str]:
    """D2*(D1): solid inside the fitted (D1, D2) box, dashed outside it (extrapolated); the two parts meet. The
    parts drawn ("fitted", "extrapolated"; none when the laws never cross that way in view)."""
    (d1_lo, d1_hi), (d2_lo, d2_hi) = box
    inside = _inside(d1_grid, d1_lo, d1_hi) & _inside(d2_star, d2_lo, d2_hi)
    outside = ~inside
    outside[1:] |= outside[:-1] & inside[1:]  # one shared point at each edge: no hole between solid and dashed
    outside[:-1] |= outside[1:] & inside[:-1]
    drawn = set()
    if np.isfinite(np.where(outside, d2_star, np.nan)).any():
        drawn.add("extrapolated")
        ax.plot(
            d1_grid,
            np.where(outside, d2_star, np.nan),
            color=color,
            ls="--",
            lw=1.1,
            zorder=3,
            gid=f"tie:{n1:g}:extrapolated",
        )
    if np.isfinite(np.where(inside, d2_star, np.nan)).any():
        drawn.add("fitted")
        ax.plot(d1_grid, np.where(inside, d2_star, np.nan), color=color, lw=lw, zorder=3.1, gid=f"tie:{n1:g}:fitted")
    return drawn


def threshold(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Paper Fig. 1 right: the threshold D2* beyond which an MoE from scratch beats upcycling, over D1, per N1 and
    framing.

    The plane is shaded by who the laws predict wins, for one dense size (that of the upcycled runs): one colour
    per winner, a hatch where the laws are undefined, each named in the legend. D2* is drawn per D1 as the first
    D2 where upcycling stops winning (:func:`first_tie`, one value per D1), for every dense size. The plane reaches
    ``SHOWN_EXTRAPOLATION`` times beyond the upcycled fit's (D1, D2) range on each side; D2* is solid inside that
    range (the box) and dashed outside it, where the laws extrapolate.
    """
    up_fit, scratch_fit = need_fits(fits, "threshold")
    up = require_runs(runs, UPCYCLED, "threshold")
    joint = "N1" in get_law(up_fit["law"]).columns
    sizes = sorted(runs["N_dense"].unique()) if joint else sorted(up["N_dense"].unique())
    counts = up["N_dense"].value_counts()
    shaded = float(sorted(counts.index, key=lambda n: (-counts[n], n))[0])  # the size most upcycled runs have
    ratio = float((up["N_active"] / up["N_dense"]).median())
    laws = Laws({UPCYCLE: up_fit, SCRATCH: scratch_fit})
    box = fitted_range(up_fit, "D1", up), fitted_range(up_fit, "D2", up)
    (d1_lo, d1_hi), (d2_lo, d2_hi) = box
    d1_grid = log_grid(d1_lo / SHOWN_EXTRAPOLATION, d1_hi * SHOWN_EXTRAPOLATION, 121, (d1_lo, d1_hi))
    d2_grid = log_grid(d2_lo / SHOWN_EXTRAPOLATION, d2_hi * SHOWN_EXTRAPOLATION, 241, (d2_lo, d2_hi))
    d1_mesh, d2_mesh = np.meshgrid(d1_grid, d2_grid)
    models = runs.groupby("N_dense")["model"].first().to_dict() if "model" in runs.columns else {}
    colors = dict(zip(sizes, sns.color_palette("mako", len(sizes) + 1)[: len(sizes)], strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 5.0), sharey=True)
    present: set[str] = set()
    ties: dict[float, set[str]] = {n1: set() for n1 in sizes}  # the parts of each size's D2* drawn
    for ax, framing in zip(axes, ("same extra tokens", "same total compute (sunk dense cost included)"), strict=True):
        extra = 0.0 if framing == "same extra tokens" else d1_mesh.ravel() / ratio  # sunk compute as tokens
        for n1 in sizes:
            with np.errstate(all="ignore"):
                gap = log_gap(laws, n1, d1_mesh.ravel(), d2_mesh.ravel(), extra).reshape(d1_mesh.shape)
            gap = np.where(np.isfinite(gap), gap, np.nan)
            if n1 == shaded:
                present |= _regions(ax, d1_grid, d2_grid, gap)
            ties[n1] |= _tie(ax, d1_grid, first_tie(d2_grid, gap), box, n1, colors[n1], 2.2 if n1 == shaded else 1.6)
        ax.add_patch(Rectangle((d1_lo, d2_lo), d1_hi - d1_lo, d2_hi - d2_lo, fill=False, ec="0.2", lw=1, zorder=2.5))
        ax.scatter(up["D1"], up["D2"], color="k", s=14, zorder=4)
        ax.set(xscale="log", yscale="log", xlabel="sunk dense tokens D1", title=framing)
        ax.set_xlim(d1_grid[0], d1_grid[-1])
        ax.set_ylim(d2_grid[0], d2_grid[-1])
        ax.title.set_fontsize(9)
        ax.grid(False)  # grid lines over the shading read as more boundaries
        log_axis(ax.xaxis, count_label)
    log_axis(axes[0].yaxis, count_label)
    axes[0].set_ylabel("upcycled tokens D2")
    fig.legend(
        handles=_legend(ties, shaded, present, colors, models), fontsize=7, loc="lower center", ncol=3, frameon=False
    )
    warning = flagged_fits(fits, FIGURE_SPECS["threshold"].fits)
    if warning:
        fig.suptitle(wrap(f"flagged fits: {warning}", 150), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def _legend(
    ties: dict[float, set[str]],
    shaded: float,
    present: set[str],
    colors: dict[float, Any],
    models: dict[float, str],
) -> list[Any]:
    """Every region drawn, each size's D2* line (or that it has none in view), the extrapolated style when drawn,
    the fitted box and the runs."""
    fills = {
        "upcycle": {"fc": UPCYCLE_WINS},
        "scratch": {"fc": SCRATCH_WINS},
        "undefined": {"fc": "white", "hatch": UNDEFINED_HATCH, "ec": "0.55", "lw": 0},
    }
    where = f" ({_size_label(shaded, models)})" if len(ties) > 1 else ""
    handles: list[Any] = [Patch(**fills[r], label=REGIONS[r] + where) for r in REGIONS if r in present]
    for n1, parts in ties.items():
        label = f"D2*, {_size_label(n1, models)}" + ("" if parts else ": none in view")
        handles.append(Line2D([], [], color=colors[n1], lw=2.2 if n1 == shaded else 1.6, label=label))
    if any("extrapolated" in parts for parts in ties.values()):
        handles.append(Line2D([], [], color="0.35", ls="--", lw=1.1, label="D2*, extrapolated (dashed)"))
    handles += [
        Patch(fill=False, ec="0.2", label="fitted (D1, D2) range: outside it, extrapolated"),
        Line2D([], [], color="k", marker="o", ls="", ms=4, label="upcycled runs"),
    ]
    return handles


def _size_label(n1: float, models: dict[float, str]) -> str:
    """ "s (N1 = 131K)": a dense size by its grid name and parameter count."""
    count = f"N1 = {count_label(n1)}"
    return f"{models[n1]} ({count})" if n1 in models else count
