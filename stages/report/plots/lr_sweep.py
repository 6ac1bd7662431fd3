"""The learning-rate sweep: validation loss against peak lr, one line per width, the best lr starred."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd

from stages.core.kinds import LR_SWEEP
from stages.report.plots.common import Fits, require_runs, sequential
from stages.report.plots.labels import budget_labels, count_label, wrap


def lr_sweep(runs: pd.DataFrame, fits: Fits) -> plt.Figure:
    """Validation loss vs peak learning rate (log x) of the grid.lr_sweep runs: one panel per parametrization (and
    token budget D), one line per width (d_model, darker is narrower), each width's best lr starred and listed in
    the panel's title ("≤0.001" when it is the smallest lr of the line: the optimum may lie below the sweep; "≥"
    at the largest). Under muP the starred lrs of all widths line up; under SP they drift (to smaller lrs as
    width grows)."""
    del fits
    rows = require_runs(runs, LR_SWEEP, "lr_sweep")
    if "parametrization" not in rows.columns:
        rows = rows.assign(parametrization="sp")
    rows = rows.assign(parametrization=rows["parametrization"].fillna("sp").astype(str))
    order = {"sp": 0, "mup": 1}
    kinds = sorted(rows["parametrization"].unique(), key=lambda p: (order.get(p, 2), p))
    budgets = sorted(rows["D"].unique())
    names = budget_labels(rows, "D")
    widths = sorted(rows["d_model"].unique())
    palette = sequential(widths)
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
            ax.set_title(wrap(title, 60), fontsize=9)
            ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.legend(fontsize=7)
    fig.suptitle("learning-rate sweep: the best lr (stars) per width", fontsize=10)
    fig.tight_layout()
    return fig
