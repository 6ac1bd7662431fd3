"""Paper figures from the runs table and the fitted laws (seaborn; PNG and PDF with deterministic bytes).

``python -m stages.figures loss_vs_d2 --runs results/tables/runs.csv --fit results/fits/upcycled.json \\
    --out results/figures/loss_vs_d2``

Each figure is a function ``name(runs, fits) -> Figure`` registered in ``FIGURES``; the CLI writes
``<out>.png`` and ``<out>.pdf`` without timestamps or software tags, so a rerun on the same inputs
gives the same bytes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from stages.artifacts import atomic_path, read_json, sha256_file  # noqa: E402
from stages.cli import ArgumentParser, UserError, run  # noqa: E402
from stages.fit import predict, read_table  # noqa: E402
from stages.provenance import FIGURE_KEY  # noqa: E402

KIND_LABELS = {"dense": "dense", "scratch_moe": "MoE from scratch", "upcycled": "upcycled MoE",
               "dense_cont": "dense continued"}
KIND_MARKERS = {"dense": "o", "scratch_moe": "s", "upcycled": "^", "dense_cont": "D"}


def _style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"svg.hashsalt": "fixed", "figure.dpi": 100, "savefig.dpi": 150})


def _require(runs: pd.DataFrame, kind: str, figure: str) -> pd.DataFrame:
    rows = runs[runs["kind"] == kind]
    if rows.empty:
        raise UserError(f"figure {figure}: the runs table has no '{kind}' runs")
    return rows


def _tokens_label(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def _plain_log_y(ax: plt.Axes) -> None:
    """Losses span a narrow range: label the log axis with plain numbers, not powers of ten."""
    for axis in (ax.yaxis,):
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
        axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))


def loss_vs_d2(runs: pd.DataFrame, fits: dict[str, dict[str, Any]]) -> plt.Figure:
    """Upcycled loss vs D2, one colour per D1 (log-log), with the fitted D1 x D2 law."""
    up = _require(runs, "upcycled", "loss_vs_d2").sort_values(["D1", "D2"])
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    d1_values = sorted(up["D1"].unique())
    palette = dict(zip(d1_values, sns.color_palette("viridis", len(d1_values)), strict=True))
    sns.scatterplot(data=up, x="D2", y="val_loss", hue="D1", palette=palette, s=50, ax=ax, legend=False, zorder=3)
    fit = fits.get("upcycled")
    grid = np.geomspace(up["D2"].min() / 1.5, up["D2"].max() * 1.5, 100)
    for d1 in d1_values:
        label = f"D1 = {_tokens_label(d1)}"
        if fit is not None:
            curve = predict(fit["law"], fit["params"], pd.DataFrame({"D1": d1, "D2": grid}))
            ax.plot(grid, curve, color=palette[d1], lw=1.5, label=label)
        else:
            ax.plot([], [], color=palette[d1], marker="o", ls="", label=label)
    ax.set(xscale="log", yscale="log", xlabel="upcycled tokens D2", ylabel="validation loss (nats/token)")
    _plain_log_y(ax)
    if fit is not None:
        p = fit["params"]
        ax.set_title(f"fit: $\\alpha_1$={p['alpha1']:.3g}, $\\alpha_2$={p['alpha2']:.3g}, "
                     f"$\\alpha_3$={p['alpha3']:.2g}, E={p['E']:.3g}", fontsize=9)
    ax.legend(title=None, fontsize=8)
    fig.tight_layout()
    return fig


def loss_vs_compute(runs: pd.DataFrame, fits: dict[str, dict[str, Any]]) -> plt.Figure:
    """Validation loss vs total training compute; upcycled runs include the sunk dense cost."""
    del fits
    if runs.empty:
        raise UserError("figure loss_vs_compute: the runs table is empty")
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    data = runs.assign(series=[
        f"{KIND_LABELS[k]} ({m})" if k in ("dense", "dense_cont") else f"{KIND_LABELS[k]} ({m}, {e})"
        for k, m, e in zip(runs["kind"], runs["model"], runs["moe"], strict=True)
    ])
    order = sorted(data["series"].unique())
    palette = dict(zip(order, sns.color_palette("tab10", len(order)), strict=True))
    for series in order:
        rows = data[data["series"] == series].sort_values("flops_total")
        kind = rows["kind"].iloc[0]
        if kind in ("upcycled", "dense_cont"):  # one line per D1: the continuation of one checkpoint
            for _, by_d1 in rows.groupby("D1", sort=True):
                ax.plot(by_d1["flops_total"], by_d1["val_loss"], color=palette[series], lw=1, alpha=0.7)
        else:
            ax.plot(rows["flops_total"], rows["val_loss"], color=palette[series], lw=1, alpha=0.7)
        ax.scatter(rows["flops_total"], rows["val_loss"], color=palette[series], marker=KIND_MARKERS[kind],
                   s=30, label=series, zorder=3)
    ax.set(xscale="log", yscale="log", xlabel="total training FLOPs (sunk dense cost included)",
           ylabel="validation loss (nats/token)")
    _plain_log_y(ax)
    ax.legend(fontsize=7, ncol=1)
    fig.tight_layout()
    return fig


FIGURES: dict[str, Callable[[pd.DataFrame, dict[str, dict[str, Any]]], plt.Figure]] = {
    "loss_vs_d2": loss_vs_d2,
    "loss_vs_compute": loss_vs_compute,
}


def save(fig: plt.Figure, prefix: str | Path, record: dict[str, Any]) -> None:
    """PNG and PDF without timestamps or software tags, carrying ``record`` (what they were drawn from)."""
    prefix = Path(prefix)
    text = json.dumps(record, sort_keys=True)
    with atomic_path(prefix.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None, FIGURE_KEY: text})
    with atomic_path(prefix.with_suffix(".pdf")) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None,
                                                 "Keywords": text})
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.figures", description=__doc__.split("\n\n")[0])
    p.add_argument("figure", choices=sorted(FIGURES))
    p.add_argument("--runs", required=True, help="runs table (CSV or Parquet)")
    p.add_argument("--fit", action="append", default=[], help="fit JSON(s) to draw (keyed by their law)")
    p.add_argument("--out", required=True, help="output prefix; writes <out>.png and <out>.pdf")
    args = p.parse_args(argv)
    runs = read_table(args.runs)
    fits = {}
    record: dict[str, Any] = {"figure": args.figure, "runs": args.runs, "runs_sha256": sha256_file(args.runs),
                              "fits": {path: sha256_file(path) for path in args.fit}}
    for path in args.fit:
        fit = read_json(path)
        if not isinstance(fit, dict) or "law" not in fit or "params" not in fit:
            raise UserError(f"{path}: not a fit JSON (needs 'law' and 'params')")
        fits[fit["law"]] = fit
    _style()
    save(FIGURES[args.figure](runs, fits), args.out, record)
    print(f"wrote {args.out}.png and {args.out}.pdf", file=sys.stderr)


if __name__ == "__main__":
    run(main)
