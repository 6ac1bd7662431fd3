"""Paper figures from the runs table and the fitted laws (seaborn), saved as PNG and PDF with deterministic bytes.

Each figure is a function ``name(runs, fits) -> Figure`` registered in ``FIGURES``; ``fits`` maps a fit's name
(its file stem, e.g. ``upcycled``, ``scratch_chinchilla``) to its JSON. A figure whose fit is missing raises
:class:`MissingFit`; :func:`message_figure` draws the reason instead. :func:`save` writes ``<prefix>.png`` and
``<prefix>.pdf`` without timestamps or software tags, each carrying a provenance record (report.provenance
reads it back). Bands are 95% intervals over the fit's bootstrap resamples. A figure that draws a fit whose
diagnostics flag it (stages.laws.diagnostics) says so in its title: "(collapsed: E; not identified: A, B)".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from stages.core.artifacts import atomic_path  # noqa: E402
from stages.core.cli import UserError  # noqa: E402
from stages.laws.forms import (  # noqa: E402
    LOSS,
    get_law,
    predict,  # noqa: E402
)
from stages.laws.planner import Laws, log_gap  # noqa: E402
from stages.laws.table import prepare, select  # noqa: E402
from stages.report.provenance import FIGURE_KEY  # noqa: E402

Fits = dict[str, dict[str, Any]]
KIND_LABELS = {
    "dense": "dense",
    "scratch_moe": "MoE from scratch",
    "upcycled": "upcycled MoE",
    "dense_cont": "dense continued",
}
KIND_MARKERS = {"dense": "o", "scratch_moe": "s", "upcycled": "^", "dense_cont": "D"}


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


def _tokens_label(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def _plain_log_y(ax: plt.Axes, also_x: bool = False) -> None:
    """Losses span a narrow range: label their log axes with plain numbers, not powers of ten."""
    for axis in (ax.yaxis, ax.xaxis) if also_x else (ax.yaxis,):
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
        axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))


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
    """Upcycled loss vs D2, one colour per D1 (log-log), with the fitted D1 x D2 law and its 95% band."""
    fit = fits.get("upcycled")
    if fit is not None:
        up, _ = fit_rows(runs, fit)
        up = up.assign(val_loss=up[LOSS])
    else:
        up = _require(runs, "upcycled", "loss_vs_d2")
    up = up.sort_values(["D1", "D2"])
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    d1_values = sorted(up["D1"].unique())
    palette = dict(zip(d1_values, sns.color_palette("viridis", len(d1_values)), strict=True))
    sns.scatterplot(data=up, x="D2", y="val_loss", hue="D1", palette=palette, s=50, ax=ax, legend=False, zorder=3)
    grid = np.geomspace(up["D2"].min() / 1.5, up["D2"].max() * 1.5, 100)
    for d1 in d1_values:
        label = f"D1 = {_tokens_label(d1)}"
        if fit is None:
            ax.plot([], [], color=palette[d1], marker="o", ls="", label=label)
            continue
        frame = pd.DataFrame({"D1": d1, "D2": grid})
        if "N1" in get_law(fit["law"]).columns:
            frame["N1"] = float(up.loc[up["D1"] == d1, "N1"].iloc[0])
        ax.plot(grid, predict(fit["law"], fit["params"], frame), color=palette[d1], lw=1.5, label=label)
        interval = band(fit, frame)
        if interval is not None:
            ax.fill_between(grid, *interval, color=palette[d1], alpha=0.15, lw=0)
    ax.set(xscale="log", yscale="log", xlabel="upcycled tokens D2", ylabel="validation loss (nats/token)")
    _plain_log_y(ax)
    if fit is not None:
        p = fit["params"]
        ax.set_title(
            f"fit: $\\alpha_1$={p['alpha1']:.3g}, $\\alpha_2$={p['alpha2']:.3g}, "
            f"$\\alpha_3$={p['alpha3']:.2g}, E={p['E']:.3g}" + flagged(fit, "\n"),
            fontsize=9,
        )
    ax.legend(title=None, fontsize=8)
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
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    x = np.log(per_d1["D1"].to_numpy(float))
    slope = -per_d1["slope_log_excess"].to_numpy(float)
    err = 1.96 * per_d1["slope_log_excess_se"].to_numpy(float)
    ax.errorbar(x, slope, yerr=err, fmt="o", color="C0", capsize=3, label="per-D1 OLS slope of log(L - floor), 95%")
    line_x = np.linspace(x.min() - 0.2, x.max() + 0.2, 50)
    ax.plot(
        line_x,
        p["alpha2"] - p["alpha3"] * line_x,
        color="C1",
        label=f"joint fit: {p['alpha2']:.3g} - {p['alpha3']:.2g} ln D1",
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
        ax.fill_between(xs, lows, highs, color="C1", alpha=0.15, lw=0, label="bootstrap 95% of alpha_eff")
    two_stage = ((fit.get("statsmodels") or {}).get("alpha3_two_stage") or {}).get("log_excess")
    if two_stage:
        ax.plot(
            line_x,
            two_stage["alpha2"] - two_stage["alpha3"] * line_x,
            color="C2",
            ls=":",
            label="WLS of the per-D1 slopes on ln D1",
        )
    ax.set(xlabel="ln D1 (dense tokens)", ylabel="effective D2 exponent alpha_eff")
    a3 = ci.get("alpha3")
    title = [
        f"joint fit: alpha3 = {p['alpha3']:.3g}"
        + (f", bootstrap 95% [{a3[0]:.3g}, {a3[1]:.3g}]" if a3 else "")
        + flagged(fit, "\n")
    ]
    if two_stage:
        lo, hi = two_stage["ci95"]
        title.append(f"two-stage: alpha3 = {two_stage['alpha3']:.3g}, 95% [{lo:.3g}, {hi:.3g}]")
    ax.set_title("\n".join(title), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def loss_vs_compute(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Validation loss vs total training compute; upcycled runs include the sunk dense cost."""
    del fits
    if runs.empty:
        raise UserError("figure loss_vs_compute: the runs table is empty")
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    data = runs.assign(
        series=[
            f"{KIND_LABELS[k]} ({m})" if k in ("dense", "dense_cont") else f"{KIND_LABELS[k]} ({m}, {e})"
            for k, m, e in zip(runs["kind"], runs["model"], runs["moe"].fillna(""), strict=True)
        ]
    )
    order = sorted(data["series"].unique())
    palette = dict(zip(order, sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order)), strict=True))
    for series in order:
        rows = data[data["series"] == series].sort_values("flops_total")
        kind = rows["kind"].iloc[0]
        if kind in ("upcycled", "dense_cont"):  # one line per D1: the continuation of one checkpoint
            for _, by_d1 in rows.groupby("D1", sort=True):
                ax.plot(by_d1["flops_total"], by_d1["val_loss"], color=palette[series], lw=1, alpha=0.7)
        else:
            ax.plot(rows["flops_total"], rows["val_loss"], color=palette[series], lw=1, alpha=0.7)
        ax.scatter(
            rows["flops_total"],
            rows["val_loss"],
            color=palette[series],
            marker=KIND_MARKERS[kind],
            s=30,
            label=series,
            zorder=3,
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="total training FLOPs (sunk dense cost included)",
        ylabel="validation loss (nats/token)",
    )
    _plain_log_y(ax)
    ax.legend(fontsize=6 if len(order) > 8 else 7, ncol=2 if len(order) > 8 else 1)
    fig.tight_layout()
    return fig


def sparsity(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Paper Fig. 1 left as a 2-D view: upcycled loss vs active parameters, one curve per sparsity."""
    up = _require(runs, "upcycled", "sparsity").copy()
    up["P"] = up["sparsity"].round(2)
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    levels = sorted(up["P"].unique())
    palette = dict(zip(levels, sns.color_palette("crest", len(levels)), strict=True))
    fit = fits.get("sparsity")
    grid = np.geomspace(up["N_active"].min() / 1.3, up["N_active"].max() * 1.3, 60)
    for level in levels:
        rows = up[up["P"] == level].sort_values("N_active")
        ax.scatter(
            rows["N_active"],
            rows["val_loss"],
            color=palette[level],
            s=40,
            zorder=3,
            label=f"P = {level:g} ({', '.join(sorted(set(rows['moe'])))})",
        )
        if fit is not None:
            frame = pd.DataFrame({"P": float(rows["sparsity"].mean()), "N_active": grid})
            curve = predict(fit["law"], fit["params"], frame)
            ax.plot(grid, curve, color=palette[level], lw=1.2)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="active non-embedding parameters N_active",
        ylabel="validation loss (nats/token)",
    )
    _plain_log_y(ax)
    if fit is not None:
        ax.set_title(
            f"law {fit['law']}: "
            + ", ".join(f"{k}={v:.3g}" for k, v in sorted(fit["params"].items()))
            + flagged(fit, "\n"),
            fontsize=7,
        )
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def threshold(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Paper Fig. 1 right: where upcycling and training from scratch tie, over (D1, D2), per N1 and framing.

    Drawn as the zero contour of log L_upcycle - log L_scratch on a (D1, D2) grid rather than as one root per D1,
    so that laws that cross more than once show every crossing, and the shaded side says who wins.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    up_fit = _need_fit(fits, "upcycled", "threshold")
    scratch_fit = _need_fit(fits, "scratch_chinchilla", "threshold")
    up = _require(runs, "upcycled", "threshold")
    joint = "N1" in get_law(up_fit["law"]).columns
    sizes = sorted(runs["N_dense"].unique()) if joint else sorted(up["N_dense"].unique())
    ratio = float((up["N_active"] / up["N_dense"]).median())
    laws = Laws({"upcycle": up_fit, "scratch": scratch_fit})
    d1_grid = np.geomspace(up["D1"].min() / 10, up["D1"].max() * 10, 81)
    d2_grid = np.geomspace(up["D2"].min() / 100, up["D2"].max() * 1000, 161)
    d1_mesh, d2_mesh = np.meshgrid(d1_grid, d2_grid)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.3), sharey=True)
    for ax, framing in zip(axes, ("same extra tokens", "same total compute (sunk dense cost included)"), strict=True):
        for i, n1 in enumerate(sizes):
            extra = 0.0 if framing == "same extra tokens" else d1_mesh.ravel() / ratio  # sunk compute as tokens
            with np.errstate(all="ignore"):
                gap = log_gap(laws, n1, d1_mesh.ravel(), d2_mesh.ravel(), extra).reshape(d1_mesh.shape)
            ax.contourf(d1_grid, d2_grid, np.where(gap < 0, 1.0, 0.0), levels=[0.5, 1.5], colors=[f"C{i}"], alpha=0.15)
            if np.nanmin(gap) < 0 < np.nanmax(gap):
                ax.contour(d1_grid, d2_grid, gap, levels=[0.0], colors=[f"C{i}"])
        ax.scatter(up["D1"], up["D2"], color="k", s=14, zorder=3)
        ax.add_patch(
            plt.Rectangle(
                (up["D1"].min(), up["D2"].min()),
                up["D1"].max() - up["D1"].min(),
                up["D2"].max() - up["D2"].min(),
                fill=False,
                ec="0.3",
                ls=":",
                lw=1,
            )
        )
        ax.set(xscale="log", yscale="log", xlabel="sunk dense tokens D1", title=framing)
        ax.title.set_fontsize(9)
    axes[0].set_ylabel("upcycled tokens D2")
    handles: list[Any] = [
        Line2D([], [], color=f"C{i}", label=f"D2* (tie), N1 = {n1:.3g}") for i, n1 in enumerate(sizes)
    ]
    handles += [
        Patch(color="C0" if len(sizes) == 1 else "0.5", alpha=0.15, label="shaded: upcycling wins"),
        Line2D([], [], color="k", marker="o", ls="", ms=4, label="upcycled runs (fitted range dotted)"),
    ]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=min(4, len(handles)), frameon=False)
    warning = _flagged_fits(fits, ["upcycled", "scratch_chinchilla"])
    if warning:
        fig.suptitle(f"flagged fits: {warning}", fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def predicted_vs_observed(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Every fit's prediction against the measured loss; held-out rows marked."""
    if not fits:
        raise MissingFit("figure predicted_vs_observed: no fit with finite parameters")
    fig, ax = plt.subplots(figsize=(5.0, 4.6))
    lo, hi = math.inf, 0.0
    for i, (name, fit) in enumerate(sorted(fits.items())):
        frame, held = fit_rows(runs, fit)
        pred = predict(fit["law"], fit["params"], frame)
        obs = frame[LOSS].to_numpy(float)
        ax.scatter(obs[~held], pred[~held], color=f"C{i}", s=25, label=f"{name} (fitted)")
        if held.any():
            ax.scatter(
                obs[held], pred[held], color=f"C{i}", s=60, marker="*", edgecolor="k", label=f"{name} (held out)"
            )
        lo, hi = min(lo, obs.min(), pred.min()), max(hi, obs.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="y = x")
    ax.set(xscale="log", yscale="log", xlabel="observed validation loss", ylabel="predicted by the fitted law")
    warning = _flagged_fits(fits, sorted(fits))
    if warning:
        ax.set_title(f"flagged fits: {warning}", fontsize=7, wrap=True)
    _plain_log_y(ax, also_x=True)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def residuals(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Log residuals of every fit against each of its variables (curvature here means a missing term)."""
    if not fits:
        raise MissingFit("figure residuals: no fit with finite parameters")
    panels = [(name, fit, col) for name, fit in sorted(fits.items()) for col in get_law(fit["law"]).columns]
    cols = min(3, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 2.6 * rows_n), squeeze=False)
    for ax, (name, fit, col) in zip(axes.flat, panels, strict=False):
        frame, held = fit_rows(runs, fit)
        resid = np.log(frame[LOSS].to_numpy(float)) - np.log(predict(fit["law"], fit["params"], frame))
        ax.axhline(0, color="0.4", lw=1)
        ax.scatter(frame[col][~held], resid[~held], s=18)
        if held.any():
            ax.scatter(frame[col][held], resid[held], s=50, marker="*", edgecolor="k")
        ax.set(xscale="log", xlabel=col, ylabel="log residual", title=name + flagged(fit, "\n"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # crowded minor labels on short ranges
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
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
    for kind in ("upcycled", "dense_cont"):
        rows = runs[runs["kind"] == kind]
        groups = ["model", "moe"] if kind == "upcycled" else ["model"]
        for name, group in rows.groupby(groups, sort=True):
            title = " ".join(str(v) for v in (name if isinstance(name, tuple) else (name,)))
            panels.append((f"{KIND_LABELS[kind]}: {title}", group, "D1"))
    if not panels:
        raise UserError("figure training_curves: the runs table has no runs")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    dense = runs[runs["kind"] == "dense"]
    for ax, (title, rows, key) in zip(axes.flat, panels, strict=False):
        values = sorted(rows[key].unique(), key=lambda v: (str(type(v)), v))
        palette = dict(zip(values, sns.color_palette("viridis", len(values)), strict=True))
        for value in values:
            label = f"D1 = {_tokens_label(float(value))}" if key == "D1" else str(value)
            ax.plot([], [], color=palette[value], lw=1.4, marker="o", ms=3, label=label)
            for run in rows[rows[key] == value].itertuples():
                offset = 0.0
                if key == "D1":  # a continuation: its dense parent's curve, then the run at D1 + tokens
                    parent = dense[(dense["model"] == run.model) & (dense["D1"] == run.D1)]
                    if not parent.empty and parent["run_id"].iloc[0] in curves:
                        _curve(ax, curves[parent["run_id"].iloc[0]], 0.0, palette[value], dashed=True)
                    offset = float(run.D1)
                _curve(ax, curves[run.run_id], offset, palette[value])
        ax.set(xscale="log", xlabel="tokens seen", ylabel="loss (nats/token)", title=title)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _tokens_label(v)))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7, title=None)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("training curves: train loss (thin), validation loss (dots); dense parent dashed", fontsize=10)
    fig.tight_layout()
    return fig


FIGURES: dict[str, Callable[..., plt.Figure]] = {
    "loss_vs_d2": loss_vs_d2,
    "alpha_eff": alpha_eff,
    "loss_vs_compute": loss_vs_compute,
    "sparsity": sparsity,
    "threshold": threshold,
    "predicted_vs_observed": predicted_vs_observed,
    "residuals": residuals,
    "training_curves": training_curves,
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
