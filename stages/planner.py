"""Upcycle or train from scratch? Decisions from fitted laws, with bootstrap intervals.

``python -m stages.planner --fits results/fits --n1 1.3e5 --n-active 2.3e5 --d1 4e5 --extra-tokens 2e5``

Reads the upcycled, MoE-from-scratch and dense fits from ``--fits`` (by file stem), predicts every option
(upcycle, scratch with the same tokens or the same compute, dense continued; the thresholds D2*; with
``--total-flops`` the compute-optimal D1/D2 split) with 95% intervals from the fits' bootstrap resamples,
prints the table and writes it as CSV to ``--out``. An ``--extra-flops`` budget is converted to tokens by
C = 6 N_active D2. Predictions further than ``--max-extrapolation`` times outside a fitted range are refused.
The options and framings are explained in stages/laws/planner.py.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from stages.core.artifacts import write_text
from stages.core.cli import ArgumentParser, UserError, run
from stages.laws.planner import Laws, plan


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.planner", description=__doc__.split("\n\n")[0])
    p.add_argument("--fits", required=True, help="directory of fit JSON files (results/fits)")
    p.add_argument("--n1", type=float, required=True, help="dense model size N1 (non-embedding parameters)")
    p.add_argument("--n-active", type=float, required=True, help="active parameters of the MoE")
    p.add_argument("--d1", type=float, required=True, help="tokens the dense model was trained on (sunk)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--extra-tokens", type=float, help="extra token budget D2")
    budget.add_argument("--extra-flops", type=float, help="extra compute budget (FLOPs, C = 6 N_active D2)")
    p.add_argument("--total-flops", type=float, help="also find the compute-optimal D1/D2 split of this budget")
    p.add_argument("--upcycled-fit", default="upcycled", help="fit name of the upcycled law (file stem)")
    p.add_argument("--scratch-fit", default="scratch_chinchilla", help="fit name of the MoE-from-scratch law")
    p.add_argument("--dense-fit", default="dense_chinchilla", help="fit name of the dense law")
    p.add_argument(
        "--max-extrapolation",
        type=float,
        default=100.0,
        help="refuse predictions further than this factor outside the fitted range",
    )
    p.add_argument("--out", help="CSV to write (the table is also printed)")
    args = p.parse_args(argv)
    for key in ("n1", "n_active", "d1", "extra_tokens", "extra_flops", "total_flops"):
        value = getattr(args, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"--{key.replace('_', '-')}: must be a positive number, got {value}")
    fits_dir = Path(args.fits)
    if not fits_dir.is_dir():
        raise UserError(f"{fits_dir}: not a directory of fit JSON files")
    roles = {"upcycle": args.upcycled_fit, "scratch": args.scratch_fit, "dense": args.dense_fit}
    laws = Laws.read(fits_dir, roles)
    extra_tokens = args.extra_tokens if args.extra_tokens is not None else args.extra_flops / (6 * args.n_active)
    table, warnings = plan(
        laws, args.n1, args.n_active, args.d1, extra_tokens, args.total_flops, args.max_extrapolation
    )
    for role in ("scratch", "dense"):
        if not laws.has(role):
            warnings.append(f"no {role} fit in {fits_dir}: {role} options not predicted")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n", float_format="%.6g")
    if args.out:
        write_text(args.out, buf.getvalue())
    with pd.option_context("display.width", 200, "display.max_colwidth", 70):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    best = table[table["option"].isin(["upcycle", "scratch_same_tokens", "scratch_same_compute", "dense_continued"])]
    best = best.loc[best["predicted_loss"].idxmin()]
    print(f"lowest predicted loss: {best['option']} ({best['predicted_loss']:.4f})")


if __name__ == "__main__":
    run(main)
