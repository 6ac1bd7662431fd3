"""Training curves: train and validation loss against tokens seen, per run family, children after their parent."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from stages.core.cli import UserError
from stages.core.kinds import CONTINUED, DENSE, KINDS, SCRATCH_MOE
from stages.report.plots.common import Fits, log_axis, sequential
from stages.report.plots.labels import budget_labels, count_label

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
    model, expanded per model, MoE and expansion) by D1, the parent's curve (dashed: the dense run, or the MoE from
    scratch an expanded run continues) continued by its children at D1 + tokens."""
    del fits
    if curves is None:
        raise UserError("figure training_curves: needs the runs' metrics.csv (python -m stages.figures --metrics)")
    runs = runs.sort_values("run_id", kind="stable")
    panels: list[tuple[str, pd.DataFrame, str]] = []  # title, rows, colour key
    for kind, key in ((DENSE, "model"), (SCRATCH_MOE, "variant")):
        rows = runs[runs["kind"] == kind]
        if not rows.empty:
            panels.append((KINDS[kind].label, rows.assign(variant=rows["model"] + " " + rows["moe"].astype(str)), key))
    for kind in CONTINUED:
        rows = runs[runs["kind"] == kind]
        if rows.empty:
            continue
        spec = KINDS[kind]
        groups = ["model", *dict.fromkeys(c for c in ("moe" if spec.moe else "", spec.variant) if c)]
        for name, group in rows.groupby(groups, sort=True):
            title = " ".join(str(v) for v in (name if isinstance(name, tuple) else (name,)))
            panels.append((f"{KINDS[kind].label}: {title}", group, "D1"))
    if not panels:
        raise UserError("figure training_curves: the runs table has no runs")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    continued = runs[runs["kind"].isin(CONTINUED)]
    d1_palette = sequential(sorted(continued["D1"].unique()))  # one colour per D1 in every panel
    for ax, (title, rows, key) in zip(axes.flat, panels, strict=False):
        sized = key != "D1" and "N_active" in rows.columns  # models and variants: shade by size
        size = rows.groupby(key)["N_active"].min() if sized else pd.Series(dtype=float)
        values = sorted(rows[key].unique(), key=lambda v: (size.get(v, 0.0), str(type(v)), v))
        palette = d1_palette if key == "D1" else sequential(values)
        names = budget_labels(rows, "D1") if key == "D1" else {}
        for value in values:
            label = f"D1 = {names[float(value)]}" if key == "D1" else str(value)
            ax.plot([], [], color=palette[value], lw=1.4, marker="o", ms=3, label=label)
            for run in rows[rows[key] == value].itertuples():
                offset = 0.0
                if key == "D1":  # a continuation: its parent's curve, then the run at D1 + tokens
                    spec = KINDS[KINDS[run.kind].continues]
                    parents = runs[runs["kind"] == spec.name]
                    budget = spec.table_budget or "D"  # the parent's own tokens: a dense run's D1, a scratch MoE's D
                    parent = parents[(parents["model"] == run.model) & (parents[budget] == run.D1)]
                    if spec.moe:  # an expanded run continues its own MoE variant
                        parent = parent[parent["moe"] == run.moe]
                    if "replica" in parents.columns:  # a further seed continues its own parent
                        parent = parent[parent["replica"] == getattr(run, "replica", 1)]
                    if not parent.empty and parent["run_id"].iloc[0] in curves:
                        _curve(ax, curves[parent["run_id"].iloc[0]], 0.0, palette[value], dashed=True)
                    offset = float(run.D1)
                _curve(ax, curves[run.run_id], offset, palette[value])
        ax.set(xscale="log", xlabel="tokens seen", ylabel="loss (nats/token)", title=title)
        log_axis(ax.xaxis, count_label)
        ax.legend(fontsize=7, title=None)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("training curves: train loss (thin), validation loss (dots); dense parent dashed", fontsize=10)
    fig.tight_layout()
    return fig
