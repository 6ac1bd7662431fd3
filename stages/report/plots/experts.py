"""The MoE's shape: loss against active parameters per sparsity (with the sparsity law), and against the number
of experts at equal active parameters."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from stages.core.cli import UserError
from stages.core.kinds import DENSE, DENSE_CONT, KINDS, SCRATCH_MOE, UPCYCLED
from stages.laws.forms import predict
from stages.laws.table import select
from stages.report.plots.common import Fits, log_axis, optional_fit, plain_log_y, require_runs
from stages.report.plots.labels import count_label, flagged, format_params, wrap


def _granularity(rows: pd.DataFrame) -> pd.Series:
    """Each row's expert granularity G (1 where the table predates the column or the run is dense)."""
    if "granularity" not in rows.columns:
        return pd.Series(1, index=rows.index)
    return rows["granularity"].fillna(1).clip(lower=1).astype(int)


def sparsity(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Paper Fig. 1 left as a 2-D view: upcycled loss vs active parameters, one curve per sparsity.

    The sparsity laws know P and N_active only, so fine-grained runs (G > 1; same P as a coarse run of the
    same total and active width) are drawn apart, hollow, and left out of the curves. Only the token budgets
    (D1, D2) the fit saw are drawn: a sweep at another budget has another loss level the law does not know.
    """
    every = require_runs(runs, UPCYCLED, "sparsity").copy()
    every["P"] = every["sparsity"].round(2)
    fit = optional_fit(fits, "sparsity")
    every, others = _fitted_budgets(every, fit)
    fine = every[_granularity(every) > 1]
    up = every[_granularity(every) == 1]
    # one curve per MoE variant: P = N_total / N_active moves a little with the dense size (the router's share)
    up = up.assign(level=up["moe"].fillna("").astype(str).where(up["moe"].fillna("") != "", up["P"].astype(str)))
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    levels = list(up.groupby("level")["sparsity"].mean().sort_values().index)
    palette = dict(zip(levels, sns.color_palette("crest", len(levels)), strict=True))
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
    log_axis(ax.xaxis, count_label)
    plain_log_y(ax)
    if fit is not None:
        title = f"law {fit['law']}: " + format_params(fit) + flagged(fit, "\n", list(fit["params"]))
        if others:
            title += f" (not drawn: the runs at {others}, a budget the law does not know)"
        ax.set_title(wrap(title, 80), fontsize=7)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _fitted_budgets(up: pd.DataFrame, fit: dict | None) -> tuple[pd.DataFrame, str]:
    """The upcycled runs at the (D1, D2) budgets of the rows the fit selected, and the other budgets named."""
    if fit is None or not fit.get("where"):
        return up, ""
    try:
        chosen = up[select(up, fit["where"], "where", "the sparsity fit")]
    except UserError:  # the fit's query names a column this table lacks: draw everything
        return up, ""
    budgets = set(zip(chosen["D1"], chosen["D2"], strict=True))
    keep = np.array([b in budgets for b in zip(up["D1"], up["D2"], strict=True)], dtype=bool)
    left = sorted(set(zip(up.loc[~keep, "D1"], up.loc[~keep, "D2"], strict=True)))
    named = ", ".join(f"D1 {count_label(d1)} D2 {count_label(d2)}" for d1, d2 in left)
    return (up[keep] if keep.any() else up), named


def experts(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """He et al.'s view: loss against the number of experts at equal active parameters, per model and kind.

    One panel per MoE kind (upcycled, from scratch). Coarse experts (G = 1) form one line per (model, top-k);
    fine-grained ones (G > 1) are separate markers at their E, labelled with G; the dense run with the same
    active parameters and tokens (dense continued for upcycled runs, dense for scratch runs) is the dashed
    level E = 1. Points are means over seeds; the bars span the seeds.
    """
    kinds = [k for k in (UPCYCLED, SCRATCH_MOE) if (runs["kind"] == k).any() and "experts" in runs.columns]
    if not kinds:
        raise UserError("figure experts: the runs table has no MoE runs with an experts column")
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4.2), squeeze=False)
    models = sorted(set(runs.loc[runs["kind"].isin(kinds), "model"]))
    palette = dict(zip(models, sns.color_palette("deep", len(models)), strict=True))
    for ax, kind in zip(axes[0], kinds, strict=True):
        moe = runs[runs["kind"] == kind].assign(G=lambda f: _granularity(f))
        budget = ["D1", "D2"] if kind == UPCYCLED else ["D"]
        dense_kind = DENSE_CONT if kind == UPCYCLED else DENSE
        several = len(moe.groupby(budget)) > 1  # e.g. one sweep at 4x the tokens: its own shade and label
        lines = sorted({(m, *b) for m, *b in moe[["model", *budget]].itertuples(index=False)})
        shades = {}
        for model in models:
            mine = [line for line in lines if line[0] == model]
            if not mine:  # a size this panel's kind did not train
                continue
            tones = sns.dark_palette(palette[model], len(mine) + 1, reverse=True)[: len(mine)]
            shades.update(zip(mine, tones if len(mine) > 1 else [palette[model]], strict=True))
        for (model, top_k, g, *at), rows in moe.groupby(["model", "top_k", "G", *budget], sort=True):
            colour = shades[(model, *at)]
            tokens = " ".join(f"{b} {count_label(v)}" for b, v in zip(budget, at, strict=True)) if several else ""
            cells = rows.groupby("experts")["val_loss"].agg(["mean", "min", "max"]).reset_index()
            err = np.vstack([cells["mean"] - cells["min"], cells["max"] - cells["mean"]])
            fine = g > 1
            ax.errorbar(
                cells["experts"],
                cells["mean"],
                yerr=err,
                color=colour,
                marker="D" if fine else "o",
                mfc="white" if fine else colour,
                ls="" if fine else "-",
                capsize=2,
                lw=1.2,
                label=", ".join(filter(None, [model, f"G = {g}" if fine else "", f"top-{int(top_k)}", tokens])),
            )
            key = dict(zip(budget, (rows[b].iloc[0] for b in budget), strict=True))
            if kind == UPCYCLED:  # dense continued from the same parent by the same D2
                key = {"D1": key["D1"], "D2": key["D2"]}
            base = runs[(runs["kind"] == dense_kind) & (runs["model"] == model)]
            for col, value in key.items():
                base = base[np.isclose(base[col], value, rtol=0.02)]
            if not fine and not base.empty:
                ax.axhline(base["val_loss"].mean(), color=colour, ls="--", lw=0.9)
        ax.set(xscale="log", xlabel="experts E (equal active parameters)", ylabel="validation loss (nats/token)")
        ticks = sorted(set(moe["experts"].astype(int)))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{KINDS[kind].label} (dashed: {KINDS[dense_kind].label}, same tokens)", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
