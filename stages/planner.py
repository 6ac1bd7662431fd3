"""Upcycle, train an MoE from scratch, or keep training the dense model? Decisions from fitted laws.

``python -m stages.planner --fits results/fits --n1 1.3e5 --n-active 2.3e5 --d1 4e5 --extra-tokens 2e5``
``python -m stages.planner --fits liew2025 --n1 1e9 --n-active 1.6e9 --d1 1e10 --extra-tokens 1e10``

You own a dense checkpoint (N1 parameters, D1 tokens: sunk). Reads the upcycled, MoE-from-scratch and dense
fits from ``--fits`` (a directory of fit JSON files, by file stem, or a published fit set: ``liew2025`` is
Table 2 of Liew et al. 2025), predicts every option (upcycle; scratch with the same extra tokens or the same
total compute; dense continued; with ``--grown-fit`` and ``--n-grown``, the dense model grown into a larger one and
trained on (grow); with ``--total-flops`` the compute-optimal D1/D2 split of a fresh run) and the
thresholds D2*, with 95% intervals from the fits' bootstrap resamples, and recommends the best option that fits
the extra budget (``--extra-tokens``, or ``--extra-flops`` with C = 6 N D) with its margin, or says the best two
are indistinguishable. Every row carries its compute (flops_extra, flops_total: the sunk cost once) and its
extrapolation factor against the fitted ranges. Option predictions further than ``--max-extrapolation`` times
outside a fitted range are refused; thresholds and the split are flagged instead. Prints the table and the
verdict (warnings on stderr, and in the table's note column) and writes the table as CSV to ``--out``.
The options, framings and columns are explained in stages/laws/planner.py.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence

import pandas as pd

from stages.core.artifacts import write_text
from stages.core.cli import ArgumentParser, UserError, run
from stages.laws.fitted import Laws
from stages.laws.outcomes import Budget
from stages.laws.planner import plan
from stages.laws.published import FIT_SETS
from stages.laws.roles import DEFAULT_FITS, DENSE, GROW, SCRATCH, UPCYCLE

PRINTED = (
    "option",
    "within_budget",
    "predicted_loss",
    "loss_ci95_low",
    "loss_ci95_high",
    "tokens_this_phase",
    "flops_extra",
    "flops_total",
    "extrapolation",
    "note",
)
NOTE_WIDTH = 60  # printed notes are cut here; plan.csv and stderr have them in full


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.planner", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--fits",
        required=True,
        help=f"directory of fit JSON files (results/fits), or a published fit set: {', '.join(sorted(FIT_SETS))}",
    )
    p.add_argument("--n1", type=float, required=True, help="dense model size N1 (non-embedding parameters)")
    p.add_argument("--n-active", type=float, required=True, help="active parameters of the MoE")
    p.add_argument("--d1", type=float, required=True, help="tokens the dense model was trained on (sunk)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--extra-tokens", type=float, help="extra budget in training tokens (every option)")
    budget.add_argument("--extra-flops", type=float, help="extra budget in FLOPs (6 N D; N = N_active for MoEs)")
    p.add_argument("--total-flops", type=float, help="also find the compute-optimal D1/D2 split of this budget")
    p.add_argument("--upcycled-fit", default=DEFAULT_FITS[UPCYCLE], help="fit name of the upcycled law (file stem)")
    p.add_argument("--scratch-fit", default=DEFAULT_FITS[SCRATCH], help="fit name of the MoE-from-scratch law")
    p.add_argument("--dense-fit", default=DEFAULT_FITS[DENSE], help="fit name of the dense law")
    p.add_argument(
        "--grown-fit",
        help="fit name of the upcycled D1 x D2 law fitted on grown runs: adds the option 'grow' (needs --n-grown)",
    )
    p.add_argument("--n-grown", type=float, help="size of the grown dense model of the grow option (parameters)")
    p.add_argument(
        "--max-extrapolation",
        type=float,
        default=100.0,
        help="refuse option predictions further than this factor outside the fitted range",
    )
    p.add_argument("--out", help="CSV to write (the table is also printed)")
    args = p.parse_args(argv)
    if (args.grown_fit is None) != (args.n_grown is None):
        raise UserError("--grown-fit and --n-grown: give both (the grown runs' law and the grown model's size) or none")
    for key in ("n1", "n_active", "d1", "extra_tokens", "extra_flops", "total_flops", "max_extrapolation", "n_grown"):
        value = getattr(args, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"--{key.replace('_', '-')}: must be a positive number, got {value}")
    roles = {UPCYCLE: args.upcycled_fit, SCRATCH: args.scratch_fit, DENSE: args.dense_fit}
    if args.grown_fit:
        roles[GROW] = args.grown_fit
    laws = Laws.load(args.fits, roles)
    extra = Budget(args.extra_tokens, "tokens") if args.extra_tokens is not None else Budget(args.extra_flops, "flops")
    table, warnings = plan(
        laws, args.n1, args.n_active, args.d1, extra, args.total_flops, args.max_extrapolation, args.n_grown
    )
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n", float_format="%.6g")
    if args.out:
        write_text(args.out, buf.getvalue())
    shown = table[~table["kind"].isin(["verdict", "warning"])][list(PRINTED)].copy()
    shown["note"] = [
        (n if len(n) <= NOTE_WIDTH else n[: NOTE_WIDTH - 3] + "...").ljust(NOTE_WIDTH) for n in shown["note"]
    ]
    with pd.option_context("display.width", 250):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.5g}", na_rep="-"))
    print(f"verdict: {table.loc[table['kind'] == 'verdict', 'note'].iloc[0]}")


if __name__ == "__main__":
    run(main)
