"""Validation loss against total training compute, every kind of run on one axis (sunk dense cost included)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from stages.core.cli import UserError
from stages.core.kinds import CONTINUED, DENSE, EXPANDED, GROWN, KINDS, SCRATCH_MOE, UPCYCLED
from stages.report.plots.common import Fits, log_axis, plain_log_y, sequential
from stages.report.plots.labels import budget_labels, sci_label


def _series_label(kind: str, model: str, moe: str) -> str:
    label = KINDS[kind].label
    return f"{label} ({model}, {moe})" if moe else f"{label} ({model})"


def loss_vs_compute(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Validation loss vs total training compute; continued runs include the sunk dense cost.

    Runs trained from scratch (dense, MoE) are one line per model, in shades of one hue per kind (darker is
    larger); runs that continue a dense checkpoint (upcycled, dense continued, grown: each with its parent's
    sunk compute) are one line per D1, in one viridis shade per D1 shared by all three kinds, told apart by
    marker and line style (a grown line is named by its growth variant; its baseline, the grown-size dense model
    from scratch, is one of the dense lines; an expanded line by its MoE and expansion variant, its D1 being the
    parent MoE's tokens). Every line has one legend entry; further seeds of a replicated
    cell are hollow markers in their line's colour.
    """
    del fits
    if runs.empty:
        raise UserError("figure loss_vs_compute: the runs table is empty")
    data = runs.assign(moe=runs["moe"].fillna("").astype(str), model=runs["model"].astype(str))
    if "growth" in data.columns:  # a grown run's line is named by its growth variant, an upcycled one by its MoE
        grown = data["kind"] == GROWN
        data.loc[grown, "moe"] = data.loc[grown, "growth"].fillna("").astype(str)
    if "expansion" in data.columns:  # an expanded run's line by its MoE and expansion: "e4k2 x2u"
        expanded = data["kind"] == EXPANDED
        data.loc[expanded, "moe"] = (
            data.loc[expanded, "moe"] + " " + data.loc[expanded, "expansion"].fillna("").astype(str)
        )
    if "replica" not in data.columns:
        data["replica"] = 1
    first, again = data[data["replica"].fillna(1) <= 1], data[data["replica"].fillna(1) > 1]
    fig, ax = plt.subplots(figsize=(8.2, 4.6))
    colours: dict[tuple[Any, ...], Any] = {}

    def size(group: pd.DataFrame) -> float:
        return float(group["N_active"].mean()) if "N_active" in group.columns else 0.0

    for kind, hue in ((DENSE, "Greys"), (SCRATCH_MOE, "Oranges")):
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
                marker=KINDS[kind].marker,
                ms=5,
                label=_series_label(kind, model, moe),
            )
    continued = first[first["kind"].isin(CONTINUED)]
    d1_colour = sequential(sorted(continued["D1"].unique()))
    names = budget_labels(data, "D1")
    series = sorted(continued.groupby(["kind", "model", "moe"]), key=lambda g: (g[0][0] != UPCYCLED, g[0]))
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
                marker=KINDS[kind].marker,
                ms=5,
                label=f"{_series_label(kind, model, moe)}, D1 = {names[float(d1)]}",
            )
    for row in again.itertuples():
        key = (row.kind, row.model, row.moe) + ((float(row.D1),) if row.kind in CONTINUED else ())
        ax.plot(
            row.flops_total,
            row.val_loss,
            ls="",
            marker=KINDS[row.kind].marker,
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
    log_axis(ax.xaxis, sci_label)
    plain_log_y(ax)
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
