"""Time the CLI-default Chinchilla fit (Hoffmann's 4500 starts) on 2 worker processes and on one, side by side.

Target: the 2-worker fit in at most 60 s on a 2-core machine. The 2-worker time includes spawning the
workers. Both runs must land on the same optimum (they run the same starts in the same order).

    .venv/bin/python bench/fit_chinchilla.py [--workers 2] [--grid N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stages.laws.fitter import FitResult, fit_law, worker_pool

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla_epoch_extracted.csv"


def epoch_rows() -> pd.DataFrame:
    """D = C / (6 N); drop the 5 highest losses (Epoch AI's preprocessing, 240 rows)."""
    raw = pd.read_csv(DATA)
    frame = pd.DataFrame(
        {"N": raw["Model Size"], "D": raw["Training FLOP"] / (6 * raw["Model Size"]), "loss": raw["loss"]}
    )
    return frame[frame["loss"] < np.sort(frame["loss"].to_numpy())[-5]].reset_index(drop=True)


def timed_fit(frame: pd.DataFrame, workers: int, grid: int | None) -> tuple[float, FitResult]:
    start = time.perf_counter()
    with worker_pool(workers) as pool:
        fit = fit_law(frame, "chinchilla", grid=grid, pool=pool)
    return time.perf_counter() - start, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grid", type=int, default=None, help="starts (default: the full 4500-point grid)")
    args = parser.parse_args()
    frame = epoch_rows()
    parallel_s, parallel = timed_fit(frame, args.workers, args.grid)
    serial_s, serial = timed_fit(frame, 1, args.grid)
    print(f"chinchilla sum-Huber fit, {len(frame)} points, {parallel.n_starts} starts")
    print(f"{'':>22} {f'{args.workers} workers':>14} {'1 process':>14}")
    print(f"{'wall time (s)':>22} {parallel_s:14.2f} {serial_s:14.2f}")
    print(f"{'ms per start':>22} {1e3 * parallel_s / parallel.n_starts:14.2f} {1e3 * serial_s / serial.n_starts:14.2f}")
    print(f"{'starts at best':>22} {parallel.n_starts_at_best:14d} {serial.n_starts_at_best:14d}")
    print(f"{'objective':>22} {parallel.objective:14.10g} {serial.objective:14.10g}")
    print(f"speed-up (1 process / {args.workers} workers): {serial_s / parallel_s:.2f}x (target: <= 60 s on 2 workers)")
    print("params: " + ", ".join(f"{k}={v:.6g}" for k, v in parallel.params.items()))
    if parallel.params != serial.params:
        raise SystemExit("error: the parallel and single-process fits differ")


if __name__ == "__main__":
    main()
