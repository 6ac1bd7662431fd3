"""How well every fitted law matches the runs: predicted against observed loss, and the log residuals."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from stages.laws.forms import LOSS, get_law, predict
from stages.report.plots.common import Fits, MissingFit, fit_rows, log_axis, plain_log_y
from stages.report.plots.labels import axis_label, count_label, flagged, wrap


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
        ax.set_title(wrap("flagged fits:\n" + "\n".join(flags), 95), fontsize=7)
    plain_log_y(ax, also_x=True)
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
        ax.set(xscale="log", xlim=(lo / 1.25, hi * 1.25), xlabel=axis_label(col), ylabel="log residual")
        ax.set_title(name + wrap(flagged(fit, "\n"), 42), fontsize=8)
        log_axis(ax.xaxis, count_label)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        "log residual = log observed - log predicted" + ("; stars: held-out rows" if any_held else ""), fontsize=9
    )
    fig.tight_layout()
    return fig
