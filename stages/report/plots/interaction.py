"""The upcycled D1 x D2 law: loss against D2 per D1 with the fitted law, and the interaction alpha_eff(D1)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from stages.core.cli import UserError
from stages.core.kinds import UPCYCLED
from stages.laws.forms import COEFFICIENT, LOSS, get_law, predict
from stages.report.plots.common import (
    Fits,
    band,
    fit_rows,
    log_axis,
    log_grid,
    log_ticks,
    need_fits,
    optional_fit,
    plain_log_y,
    require_runs,
    sequential,
)
from stages.report.plots.labels import budget_labels, count_label, flagged, format_number, format_params, wrap


def loss_vs_d2(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Upcycled loss vs D2, one colour per D1 (log-log), with the fitted D1 x D2 law and its 95% band. Each D1's
    law is solid over the D2 its own runs span (the fitted ones) and dashed beyond, from its last measured D2 on
    (and up to its first): runs of one D1 that stop at 800K say nothing about the law at 1.6M, even when another
    D1 was run there."""
    fit = optional_fit(fits, "loss_vs_d2")
    if fit is not None:
        up, held = fit_rows(runs, fit)
        up = up.assign(val_loss=up[LOSS], fitted=~held)
    else:
        up = require_runs(runs, UPCYCLED, "loss_vs_d2").assign(fitted=True)
    up = up.sort_values(["D1", "D2"])
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    d1_values = sorted(up["D1"].unique())
    palette = sequential(d1_values)
    names = budget_labels(up, "D1")
    sns.scatterplot(data=up, x="D2", y="val_loss", hue="D1", palette=palette, s=50, ax=ax, legend=False, zorder=3)
    grid = log_grid(up["D2"].min() / 1.5, up["D2"].max() * 1.5, 100, sorted(up["D2"].unique()))
    for d1 in d1_values:
        label = f"D1 = {names[float(d1)]}"
        if fit is None:
            ax.plot([], [], color=palette[d1], marker="o", ls="", label=label)
            continue
        rows = up[(up["D1"] == d1) & up["fitted"]]
        rows = rows if not rows.empty else up[up["D1"] == d1]
        first, last = float(rows["D2"].min()), float(rows["D2"].max())
        frame = pd.DataFrame({"D1": d1, "D2": grid})
        if "N1" in get_law(fit["law"]).columns:
            frame["N1"] = float(up.loc[up["D1"] == d1, "N1"].iloc[0])
        curve = predict(fit["law"], fit["params"], frame)
        for part in (grid <= first * (1 + 1e-9), grid >= last * (1 - 1e-9)):  # up to the first, from the last D2
            if part.sum() > 1:
                ax.plot(grid[part], curve[part], color=palette[d1], lw=1.0, ls="--", gid=f"extrapolated:{d1:g}")
        measured = (grid >= first * (1 - 1e-9)) & (grid <= last * (1 + 1e-9))
        ax.plot(grid[measured], curve[measured], color=palette[d1], lw=1.6, label=label, gid=f"fitted:{d1:g}")
        interval = band(fit, frame)
        if interval is not None:
            ax.fill_between(grid, *interval, color=palette[d1], alpha=0.15, lw=0)
    ax.set(xscale="log", yscale="log", xlabel="upcycled tokens D2", ylabel="validation loss (nats/token)")
    log_axis(ax.xaxis, count_label)
    plain_log_y(ax)
    handles, labels = ax.get_legend_handles_labels()
    if fit is not None:
        handles.append(Line2D([], [], color="0.35", lw=1.0, ls="--"))
        labels.append("law beyond the D1's runs (extrapolated)")
        shown = [name for name, role in get_law(fit["law"]).roles.items() if role != COEFFICIENT]
        ax.set_title("fit: " + format_params(fit, shown) + wrap(flagged(fit, "\n", shown), 80), fontsize=9)
    ax.legend(handles, labels, title=None, fontsize=8)
    fig.tight_layout()
    return fig


def alpha_eff(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """The interaction: per-D1 power-law exponents in D2 against ln D1, with the fitted alpha2 - alpha3 ln D1."""
    del runs
    (fit,) = need_fits(fits, "alpha_eff")
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
    ax.set_title(wrap("\n".join(title), 80), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
