"""Training curves: train and validation loss against tokens seen, per run family, children after their parent."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from stages.core.cli import UserError
from stages.core.kinds import CONTINUED, DENSE, KINDS, SCRATCH_MOE
from stages.report.plots.common import Fits, sequential
from stages.report.plots.labels import budget_labels, count_label
from stages.report.plots.series import SMOOTH_ROWS, outliers, segments, smoothed

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


# Line styles, named once: the figure's legend and the drawing read the same values.
SMOOTH_LW, BAND_ALPHA, PARENT_LS = 1.4, 0.22, "--"


def _curve(ax: plt.Axes, frame: pd.DataFrame, offset: float, color: Any, parent: bool = False) -> None:
    """One run at ``offset`` + tokens: its smoothed train loss over the raw rows as a faint band, one line per
    contiguous stretch of logging (none across missing rows), and its validation loss as dots where measured."""
    for part in segments(frame):
        x = part["tokens"].to_numpy(float) + offset
        smooth = smoothed(part["train_loss"])
        ax.fill_between(x, part["train_loss"].to_numpy(float), smooth, color=color, alpha=BAND_ALPHA, lw=0)
        ax.plot(x, smooth, color=color, lw=SMOOTH_LW * (0.8 if parent else 1.0), ls=PARENT_LS if parent else "-")
    val = frame[frame["val_loss"].notna()]
    if not val.empty:
        face = "white" if parent else color
        x = val["tokens"].to_numpy(float) + offset
        ax.plot(x, val["val_loss"], ls="", marker="o", ms=3.5, mfc=face, mec=color, mew=0.9, zorder=3)


def _panels(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    """(title, rows, colour key) per run family: dense runs by model, MoE from scratch by variant, and each
    continued family (upcycled per model and variant, dense continued per model, ...) by D1."""
    panels: list[tuple[str, pd.DataFrame, str]] = []
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
    return panels


def _parent(runs: pd.DataFrame, run: Any) -> str:
    """The run_id of the run a continued run starts from ('' when the table does not hold it)."""
    spec = KINDS[KINDS[run.kind].continues]
    parents = runs[runs["kind"] == spec.name]
    budget = spec.table_budget or "D"  # the parent's own tokens: a dense run's D1, a scratch MoE's D
    parent = parents[(parents["model"] == run.model) & (parents[budget] == run.D1)]
    if spec.moe:  # an expanded run continues its own MoE variant
        parent = parent[parent["moe"] == run.moe]
    if "replica" in parents.columns:  # a further seed continues its own parent
        parent = parent[parent["replica"] == getattr(run, "replica", 1)]
    return str(parent["run_id"].iloc[0]) if not parent.empty else ""


def shared_outliers(drawn: dict[str, tuple[pd.DataFrame, float, str]]) -> list[float]:
    """The tokens (on the figure's axis) of outlier batches that at least two lineages (kind, model, variant)
    share: one batch of the common data order, not the noise of one run. ``drawn``: run_id -> (metrics, offset,
    lineage)."""
    seen: dict[float, set[str]] = {}
    for frame, offset, lineage in drawn.values():
        for x in outliers(frame) + offset:
            seen.setdefault(float(x), set()).add(lineage)
    return sorted(x for x, lineages in seen.items() if len(lineages) >= 2)


def training_curves(runs: pd.DataFrame, fits: Fits, curves: Curves | None = None) -> plt.Figure:
    """Train and validation loss against tokens seen, one panel per run family (:func:`_panels`), each continued
    run after its parent's curve (dashed, at D1 + tokens for the child).

    The train loss is a rolling mean with the raw rows as a band, split wherever rows are missing; validation
    loss is a dot where it was measured, never joined (a line between measurements 50K tokens apart would draw
    data that is not there). The token axis is linear: the logging interval reads as what it is. An outlier batch
    that several lineages share (the same text of the common data order) is marked in every panel that reads it.
    """
    del fits
    if curves is None:
        raise UserError("figure training_curves: needs the runs' metrics.csv (python -m stages.figures --metrics)")
    runs = runs.sort_values("run_id", kind="stable")
    panels = _panels(runs)
    if not panels:
        raise UserError("figure training_curves: the runs table has no runs")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.5 * nrows + 0.7), squeeze=False)
    continued = runs[runs["kind"].isin(CONTINUED)]
    d1_palette = sequential(sorted(continued["D1"].unique()))  # one colour per D1 in every panel
    drawn: list[dict[str, tuple[pd.DataFrame, float, str]]] = []  # per panel: run_id -> (metrics, offset, lineage)
    for ax, (title, rows, key) in zip(axes.flat, panels, strict=False):
        sized = key != "D1" and "N_active" in rows.columns  # models and variants: shade by size
        size = rows.groupby(key)["N_active"].min() if sized else pd.Series(dtype=float)
        values = sorted(rows[key].unique(), key=lambda v: (size.get(v, 0.0), str(type(v)), v))
        palette = d1_palette if key == "D1" else sequential(values)
        names = budget_labels(rows, "D1") if key == "D1" else {}
        panel: dict[str, tuple[pd.DataFrame, float, str]] = {}
        for value in values:
            label = f"D1 = {names[float(value)]}" if key == "D1" else str(value)
            ax.plot([], [], color=palette[value], lw=SMOOTH_LW, label=label)
            for run in rows[rows[key] == value].itertuples():
                offset = 0.0
                if key == "D1":  # a continuation: its parent's curve once, then the run at D1 + tokens
                    parent = _parent(runs, run)
                    if parent in curves and parent not in panel:
                        _curve(ax, curves[parent], 0.0, palette[value], parent=True)
                        panel[parent] = (curves[parent], 0.0, _lineage(runs, parent))
                    offset = float(run.D1)
                _curve(ax, curves[run.run_id], offset, palette[value])
                panel[run.run_id] = (curves[run.run_id], offset, _lineage(runs, run.run_id))
        drawn.append(panel)
        ax.set(xlabel="tokens seen", ylabel="loss (nats/token)", title=title)
        ax.set_xlim(left=0.0)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: count_label(v)))
        _focus(ax, panel)
        ax.legend(fontsize=7, title=None, loc="lower left")  # loss curves fall: that corner stays empty
    marks = shared_outliers({k: v for panel in drawn for k, v in panel.items()})
    for ax, panel in zip(axes.flat, drawn, strict=False):
        _mark_outliers(ax, panel, marks)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    _key(fig, marked=bool(marks))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def _lineage(runs: pd.DataFrame, run_id: str) -> str:
    """A run's kind, model and variant: runs of one lineage share their logged rows (a stable phase)."""
    row = runs[runs["run_id"] == run_id].iloc[0]
    return " ".join(str(row.get(c, "")) for c in ("kind", "model", "moe"))


def _focus(ax: plt.Axes, panel: dict[str, tuple[pd.DataFrame, float, str]]) -> None:
    """A y range for what the panel compares: the smoothed loss past the first tenth of its tokens (the first
    steps fall from ln(vocabulary) and enter from above), and every validation point measured there."""
    right = max(float(frame["tokens"].max()) + offset for frame, offset, _ in panel.values())
    shown = []
    for frame, offset, _ in panel.values():
        for part in segments(frame):
            late = part["tokens"].to_numpy(float) + offset >= 0.1 * right
            shown.extend(smoothed(part["train_loss"])[late])
        val = frame["val_loss"].to_numpy(float)
        shown.extend(val[(frame["tokens"].to_numpy(float) + offset >= 0.1 * right) & np.isfinite(val)])
    if shown:
        lo, hi = float(np.min(shown)), float(np.max(shown))
        pad = 0.08 * (hi - lo) + 0.02
        ax.set_ylim(lo - pad, hi + 2.5 * pad)  # room for a mark above a spike and the legend


def _mark_outliers(ax: plt.Axes, panel: dict[str, tuple[pd.DataFrame, float, str]], marks: list[float]) -> None:
    """A triangle at the top of the axes over each shared outlier batch that a run of this panel logged, with its
    token count (inside the frame: the title stays clear)."""
    top = ax.get_xaxis_transform()  # x in tokens, y in axes fractions
    for x in marks:
        hit = any(np.isclose(outliers(frame) + offset, x).any() for frame, offset, _ in panel.values())
        if hit:
            ax.plot([x], [0.975], marker="v", color="0.15", ms=6, ls="", transform=top, zorder=4)
            ax.annotate(
                f"batch at {count_label(x)}",
                (x, 0.975),
                xycoords=top,
                xytext=(6, 0),
                textcoords="offset points",
                ha="left",
                va="center",
                fontsize=6.5,
                color="0.15",
                bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1.0},
                zorder=5,
            )


def _key(fig: plt.Figure, marked: bool) -> None:
    """What each mark means, once for the whole figure (the panels' legends name the runs)."""
    handles: list[Any] = [
        Line2D(
            [], [], color="0.3", lw=SMOOTH_LW, label=f"train loss, rolling mean of up to {SMOOTH_ROWS} logged steps"
        ),
        Patch(color="0.3", alpha=BAND_ALPHA, lw=0, label="band: raw train loss of each logged step"),
        Line2D([], [], color="0.3", marker="o", ms=3.5, ls="", label="validation loss, where measured"),
        Line2D([], [], color="0.3", lw=SMOOTH_LW * 0.8, ls=PARENT_LS, label="parent run (hollow: its validation)"),
    ]
    if marked:
        label = "one batch, an outlier in every run (shared data order)"
        handles.append(Line2D([], [], color="0.15", marker="v", ls="", label=label))
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=3, frameon=False)
