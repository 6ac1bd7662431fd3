"""A logged loss series as a figure reads it: split where rows are missing, smoothed, and its outlier batches.

Training logs the loss of one batch every ``log_every`` steps; at 512 tokens a batch that reading is noisy
(about 0.15 nats at the demo's scale), so the figures draw a rolling mean and keep the raw rows as a band. A line
is never drawn across missing rows (a resumed run whose log lost rows, a run logged at another interval): a
straight segment there would look like data. Every run reads the same data order (one data seed), so a batch of
unusual text shows as an outlier at the same tokens in every run that reads it; :func:`outliers` finds those
rows so that a figure can say so instead of leaving the reader to guess.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SMOOTH_ROWS = 9  # rolling mean over up to 9 logged rows: 90 steps, 46K tokens at the demo's log_every 10 and 512 tokens
GAP_FACTOR = 1.5  # rows further apart than 1.5 x the usual logging interval are a gap, not one interval
OUTLIER_Z = 5.0  # a row this many robust standard deviations above both neighbours is an outlier batch
OUTLIER_MIN = 0.5  # ... and at least this many nats: early batches of plain verse stand out by 0.3-0.4


def segments(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """The rows of a metrics table in contiguous runs of logging: split wherever the step (else the token count)
    jumps by more than ``GAP_FACTOR`` times its median interval."""
    frame = frame.sort_values("tokens", kind="stable").reset_index(drop=True)
    if len(frame) < 3:
        return [frame] if len(frame) else []
    clock = frame["step" if "step" in frame.columns else "tokens"].to_numpy(float)
    steps = np.diff(clock)
    usual = float(np.median(steps))
    cuts = np.flatnonzero(steps > GAP_FACTOR * usual) + 1
    bounds = [0, *cuts.tolist(), len(frame)]
    return [frame.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def window(n_rows: int) -> int:
    """The rolling window of a series of ``n_rows`` rows: ``SMOOTH_ROWS``, narrower (odd, at most an eighth of the
    series) on short runs, whose last rows are a decay phase that a wide window would smear."""
    return max(1, min(SMOOTH_ROWS, n_rows // 8) | 1)


def smoothed(values: pd.Series) -> np.ndarray:
    """The centred rolling mean over :func:`window` rows (fewer at the ends): deterministic, never past a gap
    when called per segment."""
    return values.rolling(window(len(values)), center=True, min_periods=1).mean().to_numpy(float)


def outliers(frame: pd.DataFrame) -> np.ndarray:
    """The token counts of the rows whose train loss stands above both neighbours by ``OUTLIER_Z`` robust
    standard deviations of the series' noise (and ``OUTLIER_MIN`` nats): one odd batch, not a trend (the
    steep first rows fall, they do not stand out), never the first or last row of a stretch."""
    found = []
    for part in segments(frame):
        loss = part["train_loss"]
        if len(loss) < 5:
            continue
        noise = (loss - loss.rolling(max(window(len(loss)), 5), center=True, min_periods=1).median()).to_numpy(float)
        spread = 1.4826 * float(np.nanmedian(np.abs(noise)))  # the MAD as a standard deviation
        values = loss.to_numpy(float)
        excess = values[1:-1] - np.maximum(values[:-2], values[2:])
        hit = np.flatnonzero((excess > OUTLIER_Z * spread) & (excess > OUTLIER_MIN)) + 1
        found.extend(part["tokens"].to_numpy(float)[hit])
    return np.asarray(sorted(found), float)
