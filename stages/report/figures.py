"""Paper figures from the runs table and the fitted laws (seaborn), saved as PNG and PDF with deterministic bytes.

Each figure is a function ``name(runs, fits) -> Figure`` registered in ``FIGURES``; ``fits`` maps a fit's name
(its file stem, e.g. ``upcycled``, ``scratch_chinchilla``) to its JSON. A figure whose fit is missing raises
:class:`MissingFit`; :func:`message_figure` draws the reason instead. :func:`save` writes ``<prefix>.png`` and
``<prefix>.pdf`` without timestamps or software tags, each carrying a provenance record (report.provenance
reads it back). Bands are 95% intervals over the fit's bootstrap resamples. A figure that draws a fit whose
diagnostics flag it (stages.laws.diagnostics) says so in its title: "(collapsed: E; not identified: A, B)".

Conventions every figure keeps, so that a reader can compare them: token budgets in legends are spelled as the
run directories spell them (``d1_16K`` -> "D1 = 16K", :func:`budget_labels`); count axes read 100K, 1M;
FLOPs axes read 2x10^11; fitted parameters print with their diagnosis (a collapsed floor as "E≈0 (collapsed)",
:func:`format_params`); a law drawn beyond the data it was fitted on is dashed and says "extrapolated".
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.axis  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, PathPatch, Rectangle  # noqa: E402

from stages.core.artifacts import atomic_path  # noqa: E402
from stages.core.cli import UserError, parse_tokens  # noqa: E402
from stages.laws.forms import COEFFICIENT, FLOOR, LOSS, get_law, predict  # noqa: E402
from stages.laws.planner import Laws, log_gap  # noqa: E402
from stages.laws.table import prepare, select  # noqa: E402
from stages.report.provenance import FIGURE_KEY  # noqa: E402

Fits = dict[str, dict[str, Any]]
KIND_LABELS = {
    "dense": "dense",
    "scratch_moe": "MoE from scratch",
    "upcycled": "upcycled MoE",
    "dense_cont": "dense continued",
    "grown": "grown dense",
    "lr_sweep": "dense (lr sweep)",
}
KIND_MARKERS = {"dense": "o", "scratch_moe": "s", "upcycled": "^", "dense_cont": "D", "lr_sweep": "x", "grown": "v"}
CONTINUED = ("upcycled", "dense_cont", "grown")  # runs that continue a dense checkpoint: one line per D1
# How far beyond the fitted range the threshold figure draws the laws (x10 each side, log axes): far enough to
# show where the tie heads, near enough that the data range stays readable (the planner refuses beyond 100x).
SHOWN_EXTRAPOLATION = 10.0
# A floor below this many nats prints as "≈0 (collapsed)" when the fit has no diagnostics block: the
# diagnostics call a floor collapsed below 1e-6 of the smallest loss, and losses here are O(1) nats.
COLLAPSED_FLOOR = 1e-6
UNITS = {"N": "parameters", "N1": "parameters", "N_active": "parameters", "D": "tokens", "D1": "tokens", "D2": "tokens"}
_GREEK = ("alpha", "beta", "gamma", "delta")


def style() -> None:
    """The seaborn theme and the rcParams every figure is drawn with (fixed hash salt, fixed dpi)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"svg.hashsalt": "fixed", "figure.dpi": 100, "savefig.dpi": 150})


def _require(runs: pd.DataFrame, kind: str, figure: str) -> pd.DataFrame:
    rows = runs[runs["kind"] == kind]
    if rows.empty:
        raise UserError(f"figure {figure}: the runs table has no '{kind}' runs")
    return rows


class MissingFit(UserError):
    """A figure's fit is absent or did not converge to finite parameters."""


def _need_fit(fits: Fits, name: str, figure: str) -> dict[str, Any]:
    if name not in fits:
        raise MissingFit(f"figure {figure}: needs the fit '{name}' with finite parameters")
    return fits[name]


def message_figure(text: str) -> plt.Figure:
    """A figure that says why it could not be drawn (a diverged fit should not stop the whole study)."""
    fig, ax = plt.subplots(figsize=(5.5, 2.0))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    return fig


def flagged(fit: dict[str, Any], sep: str = " ") -> str:
    """ " (collapsed: E; not identified: A)" for a fit whose diagnostics flag it; "" if ok or not diagnosed.

    ``sep`` goes before the parenthesis ("\n" puts it on its own line under a long title)."""
    short = (fit.get("diagnostics") or {}).get("short")
    return f"{sep}({short})" if short and short != "ok" else ""


def _flagged_fits(fits: Fits, names: list[str]) -> str:
    """ "name (flags); ..." over the named fits that are flagged, "" if none."""
    return "; ".join(f"{name}{flagged(fits[name])}" for name in names if name in fits and flagged(fits[name]))


# ----- how numbers are written ---------------------------------------------------------------------------------


def count_label(n: float) -> str:
    """100K, 1.5M, 2B (three significant digits): token and parameter counts that have no label of their own."""
    if not math.isfinite(n):
        return str(n)
    n = float(f"{n:.3g}")  # round first, so that 999,900 reads 1M and not 1e+03K
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def sci_label(value: float, digits: int = 3) -> str:
    """Mathtext m x 10^k, "10^k" when m is 1: FLOPs and numbers far from 1, never Python's 1.24e-35."""
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    if mantissa in ("1", "-1"):
        return f"${mantissa[:-1]}10^{{{int(exponent)}}}$"
    return f"${mantissa}\\times10^{{{int(exponent)}}}$"


def format_number(value: float | None, digits: int = 3) -> str:
    """A fitted number for a title: plain between 1e-3 and 1e5 (0.017, 1144), mathtext powers of ten beyond."""
    if value is None or not math.isfinite(value):
        return "not finite"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 10**digits:
        return f"{value:.{digits}g}"
    if 10**digits <= abs(value) < 1e5:
        return f"{value:.0f}"
    return sci_label(value, digits)


def param_symbol(name: str) -> str:
    """alpha1 -> $\\alpha_1$, beta -> $\\beta$, d2 -> $d_2$; A, B, E stay plain, as the papers write them."""
    match = re.fullmatch(r"([A-Za-z]+?)_?(\d+)", name)
    base, index = match.groups() if match else (name, "")
    if base in _GREEK:
        base = "\\" + base
    elif not index:
        return name
    return f"${base}_{{{index}}}$" if index else f"${base}$"


def format_params(fit: dict[str, Any], names: Sequence[str] | None = None) -> str:
    """ "$\\alpha_1$=0.373, ..., E≈0 (collapsed)": a fit's parameters as a title reads them.

    A parameter its diagnostics (stages.laws.diagnostics, ``bounds``) put at a bound says which; a collapsed
    floor reads "≈0" rather than its last-bit value (1.24e-35 says nothing but "zero"). Fits from before the
    diagnostics: a floor below ``COLLAPSED_FLOOR`` counts as collapsed.
    """
    roles = get_law(fit["law"]).roles
    bounds = (fit.get("diagnostics") or {}).get("bounds") or {}
    parts = []
    for name in names if names is not None else list(fit["params"]):
        value, symbol = fit["params"].get(name), param_symbol(name)
        if name in bounds:
            bound = (bounds[name] or {}).get("bound")
        else:
            tiny = value is not None and roles.get(name) == FLOOR and abs(value) < COLLAPSED_FLOOR
            bound = "collapsed" if tiny else None
        if bound == "collapsed" and roles.get(name) == FLOOR:
            parts.append(f"{symbol}≈0 (collapsed)")
        elif bound == "collapsed":
            parts.append(f"{symbol}={format_number(value)} (term collapsed)")
        elif bound:
            parts.append(f"{symbol}={format_number(value)} (at bound: {bound})")
        else:
            parts.append(f"{symbol}={format_number(value)}")
    return ", ".join(parts)


def budget_labels(rows: pd.DataFrame, column: str) -> dict[float, str]:
    """Each value of a token column (D1, D2, D) -> the budget as the run directories spell it.

    A run's path carries the budget the config asked for (``d1_16K``, Run.run_id in stages.workflow.grid), the
    table the tokens it trained, rounded down to whole optimizer steps (15872, which would print as 15.9K). So
    the label is read back from the run_id segment ``<column>_<label>`` and checked with the config's own parser
    (core.cli.parse_tokens); a table without such run_ids (any CSV) gets :func:`count_label` of the value.
    """
    prefix = column.lower() + "_"
    run_ids = rows["run_id"] if "run_id" in rows.columns else pd.Series("", index=rows.index)
    out: dict[float, str] = {}
    for value, run_id in zip(rows[column], run_ids, strict=True):
        if pd.isna(value) or float(value) in out:
            continue
        label = next((s[len(prefix) :] for s in str(run_id).split("/") if s.startswith(prefix)), "")
        try:
            parse_tokens(label, column)
        except UserError:
            label = count_label(float(value))
        out[float(value)] = label
    return out


_SUBS = ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0))  # x 10^k, sparse to dense


def log_ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Major tick positions for a log axis over [lo, hi]: the sparsest of 10^k, {1, 3} x 10^k, {1, 2, 5} x 10^k,
    {1, 2, 3, 5} x 10^k, then round linear steps (50K, 25K, ...) on short ranges, that gives three ticks no
    closer than a sixth of the axis; every n-th power of ten on ranges over ``most`` decades.

    Matplotlib labels minor ticks on ranges under a decade, where "3x10^11" and "4x10^11" collide; a few
    labelled majors and unlabelled minors read on any range.
    """
    lo, hi = sorted((float(lo), float(hi)))
    span = math.log10(hi / lo)
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if span > most:  # many decades: every n-th power of ten
        stride = math.ceil(span / most)
        return [10.0**k for k in range(first, last + 1) if k % stride == 0 and lo <= 10.0**k <= hi]
    candidates = [[m * 10.0**k for k in range(first, last + 1) for m in subs] for subs in _SUBS]
    for k in range(last, last - 3, -1):  # linear steps, coarse to fine
        for m in (5.0, 2.5, 2.0, 1.0):
            step = m * 10.0**k
            candidates.append([i * step for i in range(math.ceil(lo / step), math.floor(hi / step) + 1)])
    best: list[float] = []
    for ticks in candidates:
        ticks = [float(f"{t:.6g}") for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if len(ticks) > 1 and min(np.diff(np.log10(ticks))) < span / 6:
            continue  # labels this close collide
        if len(ticks) > len(best):
            best = ticks
        if len(best) >= 3:
            break
    return best


def _log_axis(axis: matplotlib.axis.Axis, label: Callable[[float], str]) -> None:
    """Readable ticks on a log axis (:func:`log_ticks`), written by ``label``; call once the limits are final."""
    axis.set_major_locator(matplotlib.ticker.FixedLocator(log_ticks(*axis.get_view_interval())))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: label(v)))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _plain_log_y(ax: plt.Axes, also_x: bool = False) -> None:
    """Losses span a narrow range: label their log axes with plain numbers, not powers of ten."""
    for axis in (ax.yaxis, ax.xaxis) if also_x else (ax.yaxis,):
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
        axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))


def _axis_label(column: str) -> str:
    """ "D2 (tokens)": a law column with its unit."""
    return f"{column} ({UNITS[column]})" if column in UNITS else column


def _sequential(values: Sequence[Any]) -> dict[Any, Any]:
    """One colour per ordered value (a D1, a model size), dark to light along viridis: order reads as shade."""
    return dict(zip(values, sns.color_palette("viridis", len(values)), strict=True))


def _fitted_range(fit: dict[str, Any] | None, column: str, rows: pd.DataFrame) -> tuple[float, float]:
    """The range of ``column`` the fit saw (its ``ranges`` block), else that of ``rows``."""
    ranges = (fit or {}).get("ranges") or {}
    if column in ranges:
        lo, hi = ranges[column]
        return float(lo), float(hi)
    return float(rows[column].min()), float(rows[column].max())


def _log_grid(lo: float, hi: float, n: int, keep: Sequence[float] = ()) -> np.ndarray:
    """n log-spaced points from lo to hi plus the values in ``keep`` (the edges of a fitted range)."""
    return np.union1d(np.geomspace(lo, hi, n), [v for v in keep if lo <= v <= hi])


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` characters (titles must fit their panel)."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def fit_rows(runs: pd.DataFrame, fit: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows a fit used (its where and column map applied) and a mask of its held-out rows."""
    law = get_law(fit["law"])
    frame = prepare(runs, law, fit.get("columns") or {}, fit.get("where"), "runs table")
    held = np.zeros(len(frame), bool)
    if fit.get("holdout"):
        held = select(frame, fit["holdout"]["query"], "holdout", "runs table")
    return frame, held


def band(fit: dict[str, Any], frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """2.5 and 97.5 percentiles of the prediction over the fit's bootstrap resamples, if it has them."""
    samples = (fit.get("bootstrap") or {}).get("samples") or []
    preds = [predict(fit["law"], s, frame) for s in samples if all(v is not None for v in s.values())]
    preds = [p for p in preds if np.all(np.isfinite(p))]
    if len(preds) < 10:
        return None
    stack = np.vstack(preds)
    return np.percentile(stack, 2.5, axis=0), np.percentile(stack, 97.5, axis=0)


def loss_vs_d2(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Upcycled loss vs D2, one colour per D1 (log-log), with the fitted D1 x D2 law and its 95% band; the law is
    solid over the D2 range it was fitted on and dashed beyond."""
    fit = fits.get("upcycled")
    if fit is not None:
        up, _ = fit_rows(runs, fit)
        up = up.assign(val_loss=up[LOSS])
    else:
        up = _require(runs, "upcycled", "loss_vs_d2")
    up = up.sort_values(["D1", "D2"])
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    d1_values = sorted(up["D1"].unique())
    palette = _sequential(d1_values)
    names = budget_labels(up, "D1")
    sns.scatterplot(data=up, x="D2", y="val_loss", hue="D1", palette=palette, s=50, ax=ax, legend=False, zorder=3)
    lo, hi = _fitted_range(fit, "D2", up)
    grid = _log_grid(up["D2"].min() / 1.5, up["D2"].max() * 1.5, 100, (lo, hi))
    inside = (grid >= lo * (1 - 1e-9)) & (grid <= hi * (1 + 1e-9))
    for d1 in d1_values:
        label = f"D1 = {names[float(d1)]}"
        if fit is None:
            ax.plot([], [], color=palette[d1], marker="o", ls="", label=label)
            continue
        frame = pd.DataFrame({"D1": d1, "D2": grid})
        if "N1" in get_law(fit["law"]).columns:
            frame["N1"] = float(up.loc[up["D1"] == d1, "N1"].iloc[0])
        curve = predict(fit["law"], fit["params"], frame)
        ax.plot(grid, curve, color=palette[d1], lw=1.0, ls="--")  # beyond the fitted D2 range; solid on top
        ax.plot(grid[inside], curve[inside], color=palette[d1], lw=1.6, label=label)
        interval = band(fit, frame)
        if interval is not None:
            ax.fill_between(grid, *interval, color=palette[d1], alpha=0.15, lw=0)
    ax.set(xscale="log", yscale="log", xlabel="upcycled tokens D2", ylabel="validation loss (nats/token)")
    _log_axis(ax.xaxis, count_label)
    _plain_log_y(ax)
    handles, labels = ax.get_legend_handles_labels()
    if fit is not None:
        handles.append(Line2D([], [], color="0.35", lw=1.0, ls="--"))
        labels.append("law, extrapolated")
        shown = [name for name, role in get_law(fit["law"]).roles.items() if role != COEFFICIENT]
        ax.set_title("fit: " + format_params(fit, shown) + _wrap(flagged(fit, "\n"), 80), fontsize=9)
    ax.legend(handles, labels, title=None, fontsize=8)
    fig.tight_layout()
    return fig


def alpha_eff(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """The interaction: per-D1 power-law exponents in D2 against ln D1, with the fitted alpha2 - alpha3 ln D1."""
    del runs
    fit = _need_fit(fits, "upcycled", "alpha_eff")
    per_d1 = pd.DataFrame((fit.get("statsmodels") or {}).get("per_D1") or [])
    if per_d1.empty:
        raise UserError("figure alpha_eff: the upcycled fit has no per-D1 statsmodels slopes")
    p = fit["params"]
    fig, ax = plt.subplots(figsize=(5.8, 4.4))
    x = np.log(per_d1["D1"].to_numpy(float))
    slope = -per_d1["slope_log_excess"].to_numpy(float)
    err = 1.96 * per_d1["slope_log_excess_se"].to_numpy(float)
    ax.errorbar(x, slope, yerr=err, fmt="o", color="C0", capsize=3, label="per-D1 OLS slope of log(L - floor), 95%")
    line_x = np.linspace(x.min() - 0.2, x.max() + 0.2, 50)
    ax.plot(
        line_x,
        p["alpha2"] - p["alpha3"] * line_x,
        color="C1",
        label=f"joint fit: {format_number(p['alpha2'])} - {format_number(p['alpha3'])} ln D1",
    )
    ci = (fit.get("bootstrap") or {}).get("ci95") or {}
    lows, highs, xs = [], [], []
    for d1 in per_d1["D1"]:
        key = f"alpha_eff(D1={int(d1)})"
        if ci.get(key):
            xs.append(math.log(d1))
            lows.append(ci[key][0])
            highs.append(ci[key][1])
    if xs:
        ax.fill_between(xs, lows, highs, color="C1", alpha=0.15, lw=0, label=r"bootstrap 95% of $\alpha_{eff}$")
    two_stage = ((fit.get("statsmodels") or {}).get("alpha3_two_stage") or {}).get("log_excess")
    if two_stage:
        ax.plot(
            line_x,
            two_stage["alpha2"] - two_stage["alpha3"] * line_x,
            color="C2",
            ls=":",
            label="WLS of the per-D1 slopes on ln D1",
        )
    ax.set(xlabel="ln D1 (D1 in tokens)", ylabel=r"effective D2 exponent $\alpha_{eff}$")
    # the same axis in tokens (np.log of the tiny positives matplotlib probes the inverse with, not of 0)
    top = ax.secondary_xaxis("top", functions=(np.exp, lambda v: np.log(np.maximum(v, 1e-300))))
    top.set_xticks(log_ticks(*np.exp(ax.get_xlim())))
    top.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: count_label(v)))
    top.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    top.set_xlabel("D1 (tokens)", fontsize=8)
    top.tick_params(labelsize=8)
    a3 = ci.get("alpha3")
    title = [
        rf"joint fit: $\alpha_3$ = {format_number(p['alpha3'])}"
        + (f", bootstrap 95% [{format_number(a3[0])}, {format_number(a3[1])}]" if a3 else "")
        + flagged(fit, "\n")
    ]
    if two_stage:
        lo, hi = two_stage["ci95"]
        title.append(
            rf"two-stage: $\alpha_3$ = {format_number(two_stage['alpha3'])}, "
            f"95% [{format_number(lo)}, {format_number(hi)}]"
        )
    ax.set_title(_wrap("\n".join(title), 80), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _series_label(kind: str, model: str, moe: str) -> str:
    return f"{KIND_LABELS[kind]} ({model}, {moe})" if moe else f"{KIND_LABELS[kind]} ({model})"


def loss_vs_compute(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Validation loss vs total training compute; continued runs include the sunk dense cost.

    Runs trained from scratch (dense, MoE) are one line per model, in shades of one hue per kind (darker is
    larger); runs that continue a dense checkpoint (upcycled, dense continued, grown: each with its parent's
    sunk compute) are one line per D1, in one viridis shade per D1 shared by all three kinds, told apart by
    marker and line style (a grown line is named by its growth variant; its baseline, the grown-size dense model
    from scratch, is one of the dense lines). Every line has one legend entry; further seeds of a replicated
    cell are hollow markers in their line's colour.
    """
    del fits
    if runs.empty:
        raise UserError("figure loss_vs_compute: the runs table is empty")
    data = runs.assign(moe=runs["moe"].fillna("").astype(str), model=runs["model"].astype(str))
    if "growth" in data.columns:  # a grown run's line is named by its growth variant, an upcycled one by its MoE
        grown = data["kind"] == "grown"
        data.loc[grown, "moe"] = data.loc[grown, "growth"].fillna("").astype(str)
    if "replica" not in data.columns:
        data["replica"] = 1
    first, again = data[data["replica"].fillna(1) <= 1], data[data["replica"].fillna(1) > 1]
    fig, ax = plt.subplots(figsize=(8.2, 4.6))
    colours: dict[tuple[Any, ...], Any] = {}

    def size(group: pd.DataFrame) -> float:
        return float(group["N_active"].mean()) if "N_active" in group.columns else 0.0

    for kind, hue in (("dense", "Greys"), ("scratch_moe", "Oranges")):
        groups = sorted(first[first["kind"] == kind].groupby(["model", "moe"]), key=lambda g: (size(g[1]), g[0]))
        shades = sns.color_palette(hue, len(groups) + 2)[2:]
        for ((model, moe), group), colour in zip(groups, shades, strict=True):
            group = group.sort_values("flops_total")
            colours[(kind, model, moe)] = colour
            ax.plot(
                group["flops_total"],
                group["val_loss"],
                color=colour,
                lw=1.2,
                marker=KIND_MARKERS[kind],
                ms=5,
                label=_series_label(kind, model, moe),
            )
    continued = first[first["kind"].isin(CONTINUED)]
    d1_colour = _sequential(sorted(continued["D1"].unique()))
    names = budget_labels(data, "D1")
    series = sorted(continued.groupby(["kind", "model", "moe"]), key=lambda g: (g[0][0] != "upcycled", g[0]))
    for i, ((kind, model, moe), rows) in enumerate(series):
        for d1, group in rows.groupby("D1", sort=True):
            group = group.sort_values("flops_total")
            colours[(kind, model, moe, float(d1))] = d1_colour[d1]
            ax.plot(
                group["flops_total"],
                group["val_loss"],
                color=d1_colour[d1],
                lw=1.2,
                ls=("-", "--", "-.", ":")[i % 4],
                marker=KIND_MARKERS[kind],
                ms=5,
                label=f"{_series_label(kind, model, moe)}, D1 = {names[float(d1)]}",
            )
    for row in again.itertuples():
        key = (row.kind, row.model, row.moe) + ((float(row.D1),) if row.kind in CONTINUED else ())
        ax.plot(
            row.flops_total,
            row.val_loss,
            ls="",
            marker=KIND_MARKERS[row.kind],
            ms=6,
            mfc="none",
            color=colours.get(key, "0.3"),
            zorder=3,
        )
    handles, labels = ax.get_legend_handles_labels()
    if not again.empty:
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", color="0.3", ms=6))
        labels.append("further seeds of a run (hollow)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="total training compute (FLOPs, sunk dense cost included)",
        ylabel="validation loss (nats/token)",
    )
    _log_axis(ax.xaxis, sci_label)
    _plain_log_y(ax)
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def _granularity(rows: pd.DataFrame) -> pd.Series:
    """Each row's expert granularity G (1 where the table predates the column or the run is dense)."""
    if "granularity" not in rows.columns:
        return pd.Series(1, index=rows.index)
    return rows["granularity"].fillna(1).clip(lower=1).astype(int)


def sparsity(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Paper Fig. 1 left as a 2-D view: upcycled loss vs active parameters, one curve per sparsity.

    The sparsity laws know P and N_active only, so fine-grained runs (G > 1; same P as a coarse run of the
    same total and active width) are drawn apart, hollow, and left out of the curves.
    """
    every = _require(runs, "upcycled", "sparsity").copy()
    every["P"] = every["sparsity"].round(2)
    fine = every[_granularity(every) > 1]
    up = every[_granularity(every) == 1]
    # one curve per MoE variant: P = N_total / N_active moves a little with the dense size (the router's share)
    up = up.assign(level=up["moe"].fillna("").astype(str).where(up["moe"].fillna("") != "", up["P"].astype(str)))
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    levels = list(up.groupby("level")["sparsity"].mean().sort_values().index)
    palette = dict(zip(levels, sns.color_palette("crest", len(levels)), strict=True))
    fit = fits.get("sparsity")
    grid = np.geomspace(up["N_active"].min() / 1.3, up["N_active"].max() * 1.3, 60)
    for level in levels:
        rows = up[up["level"] == level].sort_values("N_active")
        spread = f"{rows['P'].min():g}" if rows["P"].nunique() == 1 else f"{rows['P'].min():g}-{rows['P'].max():g}"
        ax.scatter(
            rows["N_active"],
            rows["val_loss"],
            color=palette[level],
            s=40,
            zorder=3,
            label=f"P = {spread} ({level})" if level != spread else f"P = {spread}",
        )
        if fit is not None:
            frame = pd.DataFrame({"P": float(rows["sparsity"].mean()), "N_active": grid})
            curve = predict(fit["law"], fit["params"], frame)
            ax.plot(grid, curve, color=palette[level], lw=1.2)
    for name, rows in fine.groupby("moe", sort=True):
        ax.scatter(
            rows["N_active"],
            rows["val_loss"],
            facecolors="none",
            edgecolors="0.3",
            marker="D",
            s=36,
            zorder=3,
            label=f"{name}: G = {int(_granularity(rows).iloc[0])}, P = {rows['P'].iloc[0]:g} (not fitted)",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="active non-embedding parameters N_active",
        ylabel="validation loss (nats/token)",
    )
    _log_axis(ax.xaxis, count_label)
    _plain_log_y(ax)
    if fit is not None:
        ax.set_title(_wrap(f"law {fit['law']}: " + format_params(fit) + flagged(fit, "\n"), 80), fontsize=7)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def experts(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """He et al.'s view: loss against the number of experts at equal active parameters, per model and kind.

    One panel per MoE kind (upcycled, from scratch). Coarse experts (G = 1) form one line per (model, top-k);
    fine-grained ones (G > 1) are separate markers at their E, labelled with G; the dense run with the same
    active parameters and tokens (dense continued for upcycled runs, dense for scratch runs) is the dashed
    level E = 1. Points are means over seeds; the bars span the seeds.
    """
    kinds = [k for k in ("upcycled", "scratch_moe") if (runs["kind"] == k).any() and "experts" in runs.columns]
    if not kinds:
        raise UserError("figure experts: the runs table has no MoE runs with an experts column")
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4.2), squeeze=False)
    models = sorted(set(runs.loc[runs["kind"].isin(kinds), "model"]))
    palette = dict(zip(models, sns.color_palette("deep", len(models)), strict=True))
    for ax, kind in zip(axes[0], kinds, strict=True):
        moe = runs[runs["kind"] == kind].assign(G=lambda f: _granularity(f))
        budget = ["D1", "D2"] if kind == "upcycled" else ["D"]
        dense_kind = "dense_cont" if kind == "upcycled" else "dense"
        for (model, top_k, g, *_), rows in moe.groupby(["model", "top_k", "G", *budget], sort=True):
            cells = rows.groupby("experts")["val_loss"].agg(["mean", "min", "max"]).reset_index()
            err = np.vstack([cells["mean"] - cells["min"], cells["max"] - cells["mean"]])
            fine = g > 1
            ax.errorbar(
                cells["experts"],
                cells["mean"],
                yerr=err,
                color=palette[model],
                marker="D" if fine else "o",
                mfc="white" if fine else palette[model],
                ls="" if fine else "-",
                capsize=2,
                lw=1.2,
                label=f"{model}, G = {g}, top-{top_k}" if fine else f"{model}, top-{top_k}",
            )
            key = dict(zip(budget, (rows[b].iloc[0] for b in budget), strict=True))
            if kind == "upcycled":  # dense continued from the same parent by the same D2
                key = {"D1": key["D1"], "D2": key["D2"]}
            base = runs[(runs["kind"] == dense_kind) & (runs["model"] == model)]
            for col, value in key.items():
                base = base[np.isclose(base[col], value, rtol=0.02)]
            if not fine and not base.empty:
                ax.axhline(base["val_loss"].mean(), color=palette[model], ls="--", lw=0.9)
        ax.set(xscale="log", xlabel="experts E (equal active parameters)", ylabel="validation loss (nats/token)")
        ticks = sorted(set(moe["experts"].astype(int)))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{KIND_LABELS[kind]} (dashed: {KIND_LABELS[dense_kind]}, same tokens)", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


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
    up_fit = _need_fit(fits, "upcycled", "threshold")
    scratch_fit = _need_fit(fits, "scratch_chinchilla", "threshold")
    up = _require(runs, "upcycled", "threshold")
    joint = "N1" in get_law(up_fit["law"]).columns
    sizes = sorted(runs["N_dense"].unique()) if joint else sorted(up["N_dense"].unique())
    ratio = float((up["N_active"] / up["N_dense"]).median())
    laws = Laws({"upcycle": up_fit, "scratch": scratch_fit})
    (d1_lo, d1_hi), (d2_lo, d2_hi) = _fitted_range(up_fit, "D1", up), _fitted_range(up_fit, "D2", up)
    d1_grid = _log_grid(d1_lo / SHOWN_EXTRAPOLATION, d1_hi * SHOWN_EXTRAPOLATION, 121, (d1_lo, d1_hi))
    d2_grid = _log_grid(d2_lo / SHOWN_EXTRAPOLATION, d2_hi * SHOWN_EXTRAPOLATION, 161, (d2_lo, d2_hi))
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
        _log_axis(ax.xaxis, count_label)
    _log_axis(axes[0].yaxis, count_label)
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
    warning = _flagged_fits(fits, ["upcycled", "scratch_chinchilla"])
    if warning:
        fig.suptitle(_wrap(f"flagged fits: {warning}", 150), fontsize=8)
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    return fig


def _size_label(n1: float, models: dict[float, str]) -> str:
    """ "s (N1 = 131K)": a dense size by its grid name and parameter count."""
    count = f"N1 = {count_label(n1)}"
    return f"{models[n1]} ({count})" if n1 in models else count


def predicted_vs_observed(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Every fit's prediction against the measured loss; held-out rows marked."""
    if not fits:
        raise MissingFit("figure predicted_vs_observed: no fit with finite parameters")
    fig, ax = plt.subplots(figsize=(7.6, 5.0))
    lo, hi = math.inf, 0.0
    for i, (name, fit) in enumerate(sorted(fits.items())):
        frame, held = fit_rows(runs, fit)
        pred = predict(fit["law"], fit["params"], frame)
        obs = frame[LOSS].to_numpy(float)
        ax.scatter(obs[~held], pred[~held], color=f"C{i}", s=25, label=name)
        if held.any():
            ax.scatter(obs[held], pred[held], color=f"C{i}", s=90, marker="*", edgecolor="k", zorder=3)
        lo, hi = min(lo, obs.min(), pred.min()), max(hi, obs.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="y = x")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="*", ms=10, color="0.7", mec="k"))
    labels.append("held-out rows (star)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="observed validation loss (nats/token)",
        ylabel="predicted by the fitted law (nats/token)",
    )
    flags = [f"{name}: {fit['diagnostics']['short']}" for name, fit in sorted(fits.items()) if flagged(fit)]
    if flags:
        ax.set_title(_wrap("flagged fits:\n" + "\n".join(flags), 95), fontsize=7)
    _plain_log_y(ax, also_x=True)
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def residuals(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Log residuals of every fit against each of its variables (curvature here means a missing term)."""
    if not fits:
        raise MissingFit("figure residuals: no fit with finite parameters")
    panels = [(name, fit, col) for name, fit in sorted(fits.items()) for col in get_law(fit["law"]).columns]
    cols = min(3, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.4 * cols, 2.8 * rows_n + 0.4), squeeze=False)
    any_held = False
    for ax, (name, fit, col) in zip(axes.flat, panels, strict=False):
        frame, held = fit_rows(runs, fit)
        any_held |= bool(held.any())
        resid = np.log(frame[LOSS].to_numpy(float)) - np.log(predict(fit["law"], fit["params"], frame))
        ax.axhline(0, color="0.4", lw=1)
        ax.scatter(frame[col][~held], resid[~held], s=18)
        if held.any():
            ax.scatter(frame[col][held], resid[held], s=60, marker="*", edgecolor="k", zorder=3)
        lo, hi = float(frame[col].min()), float(frame[col].max())
        ax.set(xscale="log", xlim=(lo / 1.25, hi * 1.25), xlabel=_axis_label(col), ylabel="log residual")
        ax.set_title(name + _wrap(flagged(fit, "\n"), 42), fontsize=8)
        _log_axis(ax.xaxis, count_label)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        "log residual = log observed - log predicted" + ("; stars: held-out rows" if any_held else ""), fontsize=9
    )
    fig.tight_layout()
    return fig


Curves = dict[str, pd.DataFrame]  # run_id -> its metrics.csv (tokens, train_loss, val_loss)


def read_curves(runs: pd.DataFrame, root: str | Path) -> tuple[Curves, dict[str, Path]]:
    """The metrics.csv of every run of the table (``<root>/<run_id>/metrics.csv``) and their paths."""
    curves, paths = {}, {}
    for run_id in sorted(runs["run_id"]):
        path = Path(root) / run_id / "metrics.csv"
        if not path.exists():
            raise UserError(f"{path}: file not found (the metrics of run {run_id} of the runs table)")
        frame = pd.read_csv(path)
        missing = {"tokens", "train_loss"} - set(frame.columns)
        if missing:
            raise UserError(f"{path}: not a metrics.csv (no {', '.join(sorted(missing))})")
        if "val_loss" not in frame.columns:
            frame["val_loss"] = np.nan  # written before periodic validation existed
        curves[run_id], paths[run_id] = frame, path
    return curves, paths


def _curve(ax: plt.Axes, frame: pd.DataFrame, offset: float, color: Any, dashed: bool = False) -> None:
    """Train loss as a thin line, validation loss as dots joined by a line, at ``offset`` + tokens."""
    x = frame["tokens"].to_numpy(float) + offset
    ax.plot(x, frame["train_loss"], color=color, lw=0.8, alpha=0.45, ls="--" if dashed else "-")
    val = frame["val_loss"].notna().to_numpy()
    if val.any():
        ax.plot(x[val], frame.loc[val, "val_loss"], color=color, lw=1.4, marker="o", ms=3, ls="--" if dashed else "-")


def training_curves(runs: pd.DataFrame, fits: Fits, curves: Curves | None = None) -> plt.Figure:
    """Train (thin) and validation loss (dots) against tokens seen, per run family: dense runs by model size,
    MoE from scratch by variant, and each continued family (upcycled per model and variant, dense continued per
    model) by D1, the dense parent's curve (dashed) continued by its children at D1 + tokens."""
    del fits
    if curves is None:
        raise UserError("figure training_curves: needs the runs' metrics.csv (python -m stages.figures --metrics)")
    runs = runs.sort_values("run_id", kind="stable")
    panels: list[tuple[str, pd.DataFrame, str]] = []  # title, rows, colour key
    for kind, key in (("dense", "model"), ("scratch_moe", "variant")):
        rows = runs[runs["kind"] == kind]
        if not rows.empty:
            panels.append((KIND_LABELS[kind], rows.assign(variant=rows["model"] + " " + rows["moe"].astype(str)), key))
    for kind in ("upcycled", "dense_cont", "grown"):
        rows = runs[runs["kind"] == kind]
        if rows.empty:
            continue
        groups = {"upcycled": ["model", "moe"], "grown": ["model", "growth"]}.get(kind, ["model"])
        for name, group in rows.groupby(groups, sort=True):
            title = " ".join(str(v) for v in (name if isinstance(name, tuple) else (name,)))
            panels.append((f"{KIND_LABELS[kind]}: {title}", group, "D1"))
    if not panels:
        raise UserError("figure training_curves: the runs table has no runs")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    dense = runs[runs["kind"] == "dense"]
    continued = runs[runs["kind"].isin(CONTINUED)]
    d1_palette = _sequential(sorted(continued["D1"].unique()))  # one colour per D1 in every panel
    for ax, (title, rows, key) in zip(axes.flat, panels, strict=False):
        sized = key != "D1" and "N_active" in rows.columns  # models and variants: shade by size
        size = rows.groupby(key)["N_active"].min() if sized else pd.Series(dtype=float)
        values = sorted(rows[key].unique(), key=lambda v: (size.get(v, 0.0), str(type(v)), v))
        palette = d1_palette if key == "D1" else _sequential(values)
        names = budget_labels(rows, "D1") if key == "D1" else {}
        for value in values:
            label = f"D1 = {names[float(value)]}" if key == "D1" else str(value)
            ax.plot([], [], color=palette[value], lw=1.4, marker="o", ms=3, label=label)
            for run in rows[rows[key] == value].itertuples():
                offset = 0.0
                if key == "D1":  # a continuation: its dense parent's curve, then the run at D1 + tokens
                    parent = dense[(dense["model"] == run.model) & (dense["D1"] == run.D1)]
                    if "replica" in dense.columns:  # a further seed continues its own dense parent
                        parent = parent[parent["replica"] == getattr(run, "replica", 1)]
                    if not parent.empty and parent["run_id"].iloc[0] in curves:
                        _curve(ax, curves[parent["run_id"].iloc[0]], 0.0, palette[value], dashed=True)
                    offset = float(run.D1)
                _curve(ax, curves[run.run_id], offset, palette[value])
        ax.set(xscale="log", xlabel="tokens seen", ylabel="loss (nats/token)", title=title)
        _log_axis(ax.xaxis, count_label)
        ax.legend(fontsize=7, title=None)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("training curves: train loss (thin), validation loss (dots); dense parent dashed", fontsize=10)
    fig.tight_layout()
    return fig


def lr_sweep(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Validation loss vs peak learning rate (log x) of the grid.lr_sweep runs: one panel per parametrization (and
    token budget D), one line per width (d_model, darker is narrower), each width's best lr starred and listed in
    the panel's title ("≤0.001" when it is the smallest lr of the line: the optimum may lie below the sweep; "≥"
    at the largest). Under muP the starred lrs of all widths line up; under SP they drift (to smaller lrs as
    width grows)."""
    del fits
    rows = _require(runs, "lr_sweep", "lr_sweep")
    if "parametrization" not in rows.columns:
        rows = rows.assign(parametrization="sp")
    rows = rows.assign(parametrization=rows["parametrization"].fillna("sp").astype(str))
    order = {"sp": 0, "mup": 1}
    kinds = sorted(rows["parametrization"].unique(), key=lambda p: (order.get(p, 2), p))
    budgets = sorted(rows["D"].unique())
    names = budget_labels(rows, "D")
    widths = sorted(rows["d_model"].unique())
    palette = _sequential(widths)
    fig, axes = plt.subplots(
        len(budgets), len(kinds), figsize=(4.6 * len(kinds), 3.9 * len(budgets)), squeeze=False, sharey=True
    )
    lrs = sorted(rows["peak_lr"].unique())
    for i, d in enumerate(budgets):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            panel = rows[(rows["D"] == d) & (rows["parametrization"] == kind)]
            best: list[str] = []
            for width in widths:
                line = panel[panel["d_model"] == width].sort_values("peak_lr")
                if line.empty:
                    continue
                n = count_label(float(line["N_active"].iloc[0])) if "N_active" in line.columns else ""
                label = f"d_model {int(width)}" + (f" (N = {n})" if n else "")
                ax.plot(line["peak_lr"], line["val_loss"], color=palette[width], lw=1.4, marker="o", ms=4, label=label)
                argmin = line.loc[line["val_loss"].idxmin()]
                star = {"ls": "", "marker": "*", "ms": 15, "mec": "black", "mew": 0.7, "zorder": 4}
                ax.plot(argmin["peak_lr"], argmin["val_loss"], color=palette[width], **star)
                edge = {line["peak_lr"].min(): "≤", line["peak_lr"].max(): "≥"} if len(line) > 1 else {}
                best.append(f"{int(width)}: {edge.get(argmin['peak_lr'], '')}{argmin['peak_lr']:g}")
            name = "muP" if kind == "mup" else kind.upper()
            title = f"{name}, D = {names[float(d)]}\nbest lr by d_model: " + ", ".join(best)
            ax.set(xscale="log", xlabel="peak learning rate", ylabel="validation loss (nats/token)")
            ax.set_title(_wrap(title, 60), fontsize=9)
            ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.legend(fontsize=7)
    fig.suptitle("learning-rate sweep: the best lr (stars) per width", fontsize=10)
    fig.tight_layout()
    return fig


FIGURES: dict[str, Callable[..., plt.Figure]] = {
    "loss_vs_d2": loss_vs_d2,
    "alpha_eff": alpha_eff,
    "loss_vs_compute": loss_vs_compute,
    "sparsity": sparsity,
    "experts": experts,
    "threshold": threshold,
    "predicted_vs_observed": predicted_vs_observed,
    "residuals": residuals,
    "training_curves": training_curves,
    "lr_sweep": lr_sweep,
}


def save(fig: plt.Figure, prefix: str | Path, record: dict[str, Any]) -> None:
    """PNG and PDF without timestamps or software tags, carrying ``record`` (what they were drawn from)."""
    prefix = Path(prefix)
    text = json.dumps(record, sort_keys=True)
    with atomic_path(prefix.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None, FIGURE_KEY: text})
    with atomic_path(prefix.with_suffix(".pdf")) as tmp:
        fig.savefig(
            tmp, format="pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None, "Keywords": text}
        )
    plt.close(fig)
