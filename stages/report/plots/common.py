"""What every figure shares: the theme, the fits and runs it needs, log axes, fit rows and bands, and saving."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.axis
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from stages.core.artifacts import atomic_path, sha256_file
from stages.core.cli import UserError
from stages.laws.forms import get_law, predict
from stages.laws.table import prepare, select
from stages.report.figure_specs import FIGURE_SPECS
from stages.report.lineage import FIGURE_KEY, PDF_DIGEST

Fits = dict[str, dict[str, Any]]


def style() -> None:
    """The seaborn theme and the rcParams every figure is drawn with (fixed hash salt, fixed dpi)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"svg.hashsalt": "fixed", "figure.dpi": 100, "savefig.dpi": 150})


def require_runs(runs: pd.DataFrame, kind: str, figure: str) -> pd.DataFrame:
    rows = runs[runs["kind"] == kind]
    if rows.empty:
        raise UserError(f"figure {figure}: the runs table has no '{kind}' runs")
    return rows


class MissingFit(UserError):
    """A figure's fit is absent or did not converge to finite parameters."""


def need_fits(fits: Fits, figure: str) -> list[dict[str, Any]]:
    """The fits ``figure`` draws (stages.report.figure_specs), in their declared order; MissingFit names the first
    one absent."""
    for name in FIGURE_SPECS[figure].fits:
        if name not in fits:
            raise MissingFit(f"figure {figure}: needs the fit '{name}' with finite parameters")
    return [fits[name] for name in FIGURE_SPECS[figure].fits]


def optional_fit(fits: Fits, figure: str) -> dict[str, Any] | None:
    """The one fit ``figure`` draws when it is there (stages.report.figure_specs); None: drawn without the law."""
    (name,) = FIGURE_SPECS[figure].fits
    return fits.get(name)


def message_figure(text: str) -> plt.Figure:
    """A figure that says why it could not be drawn (a diverged fit should not stop the whole study)."""
    fig, ax = plt.subplots(figsize=(5.5, 2.0))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    return fig


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


def log_axis(axis: matplotlib.axis.Axis, label: Callable[[float], str]) -> None:
    """Readable ticks on a log axis (:func:`log_ticks`), written by ``label``; call once the limits are final."""
    axis.set_major_locator(matplotlib.ticker.FixedLocator(log_ticks(*axis.get_view_interval())))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: label(v)))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plain_log_y(ax: plt.Axes, also_x: bool = False) -> None:
    """Losses span a narrow range: label their log axes with plain numbers, not powers of ten."""
    for axis in (ax.yaxis, ax.xaxis) if also_x else (ax.yaxis,):
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
        axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))


def sequential(values: Sequence[Any]) -> dict[Any, Any]:
    """One colour per ordered value (a D1, a model size), dark to light along viridis: order reads as shade."""
    return dict(zip(values, sns.color_palette("viridis", len(values)), strict=True))


def fitted_range(fit: dict[str, Any] | None, column: str, rows: pd.DataFrame) -> tuple[float, float]:
    """The range of ``column`` the fit saw (its ``ranges`` block), else that of ``rows``."""
    ranges = (fit or {}).get("ranges") or {}
    if column in ranges:
        lo, hi = ranges[column]
        return float(lo), float(hi)
    return float(rows[column].min()), float(rows[column].max())


def log_grid(lo: float, hi: float, n: int, keep: Sequence[float] = ()) -> np.ndarray:
    """n log-spaced points from lo to hi plus the values in ``keep`` (the edges of a fitted range)."""
    return np.union1d(np.geomspace(lo, hi, n), [v for v in keep if lo <= v <= hi])


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


def save(fig: plt.Figure, prefix: str | Path, record: dict[str, Any]) -> None:
    """PNG and PDF without timestamps or software tags, carrying ``record`` (what they were drawn from). The PDF
    is written first, so that the PNG's record also holds the PDF's sha256 (report.lineage verifies both files)."""
    prefix = Path(prefix)
    text = json.dumps(record, sort_keys=True)
    with atomic_path(prefix.with_suffix(".pdf")) as tmp:
        fig.savefig(
            tmp, format="pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None, "Keywords": text}
        )
        pdf_sha256 = sha256_file(tmp)
    with atomic_path(prefix.with_suffix(".png")) as tmp:
        png_record = json.dumps({**record, PDF_DIGEST: pdf_sha256}, sort_keys=True)
        fig.savefig(tmp, format="png", metadata={"Software": None, FIGURE_KEY: png_record})
    plt.close(fig)
