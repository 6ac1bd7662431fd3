"""Upcycle, train an MoE from scratch, or keep training the dense model? Decisions from fitted laws.

``python -m stages.planner --fits results/fits --n1 1.3e5 --n-active 2.3e5 --d1 4e5 --extra-tokens 2e5``
``python -m stages.planner --fits liew2025 --n1 1e9 --n-active 1.6e9 --d1 1e10 --extra-tokens 1e10``

You own a dense checkpoint (N1 parameters, D1 tokens: sunk). Reads the upcycled, MoE-from-scratch and dense
fits from ``--fits`` (a directory of fit JSON files, by file stem, or a published fit set: ``liew2025`` is
Table 2 of Liew et al. 2025), predicts every option (upcycle; scratch with the same extra tokens or the same
total compute; dense continued; with ``--grown-fit`` and ``--n-grown``, the dense model grown into a larger one and
trained on (grow); with ``--expanded-fit``, an MoE from scratch expanded to more experts (expand); with
``--total-flops`` the compute-optimal D1/D2 split of a fresh run) and the
thresholds D2*, with 95% intervals from the fits' bootstrap resamples, and recommends the best option that fits
the extra budget (``--extra-tokens``, or ``--extra-flops`` with C = 6 N D) with its margin, or says "too close to
call" (the margin and what would decide it) when the margin is inside the intervals, or, without intervals, below
``--min-margin``. Every row carries its compute (flops_extra, flops_total: the sunk cost once) and its
extrapolation factor against the fitted ranges. Option predictions further than ``--max-extrapolation`` times
outside a fitted range are refused; thresholds and the split are flagged instead. Prints the table and the
verdict (the warnings as one block on stderr, each reason once; every row's own in its note column) and writes
the table as CSV to ``--out``. Counts take the configs' suffixes: 1B, 100B, 2T, 250K, or 5e10.
The options, framings and columns are explained in stages/laws/planner.py.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Callable, Sequence

import pandas as pd

from stages.core.artifacts import write_text
from stages.core.cli import ArgumentParser, UserError, parse_tokens, run
from stages.laws.fitted import Laws
from stages.laws.outcomes import Budget
from stages.laws.planner import MIN_MARGIN, plan
from stages.laws.published import FIT_SETS
from stages.laws.roles import DEFAULT_FITS, DENSE, EXPAND, GROW, SCRATCH, UPCYCLE

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


def count(flag: str, what: str) -> Callable[[str], float]:
    """An argparse type: a positive count as the configs write them (250K, 1.5M, 2B, 4096, 5e10)."""
    return lambda text: float(parse_tokens(text, flag, what))


def build_parser() -> ArgumentParser:
    """The command line: every option with its meaning and default (``--help``)."""
    p = ArgumentParser(
        prog="python -m stages.planner",
        description=__doc__.split("\n\n")[0],
        epilog="Counts (parameters, tokens, FLOPs) are written as in the configs: 1B, 100B, 2T, 250K, 4096 or 5e10. "
        "Parameters are non-embedding. The options and columns: stages/laws/planner.py and docs/laws.md.",
    )
    p.add_argument(
        "--fits",
        required=True,
        help=f"directory of fit JSON files, by file stem (results/fits), or a published fit set: "
        f"{', '.join(sorted(FIT_SETS))} (Table 2 of Liew et al. 2025, point estimates: no intervals)",
    )
    p.add_argument(
        "--n1", type=count("--n1", "parameter count"), required=True, help="parameters N1 of your dense model"
    )
    p.add_argument(
        "--n-active",
        type=count("--n-active", "parameter count"),
        required=True,
        help="active parameters per token N_active of the MoE it would become (top-k experts, attention, ...); "
        "upcycling, the MoE from scratch and the compute ledger (6 N_active D) use it",
    )
    p.add_argument(
        "--d1", type=count("--d1", "token count"), required=True, help="tokens the dense model was trained on (sunk)"
    )
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument(
        "--extra-tokens", type=count("--extra-tokens", "token count"), help="extra budget in training tokens"
    )
    budget.add_argument(
        "--extra-flops",
        type=count("--extra-flops", "FLOP count"),
        help="extra budget in FLOPs (6 N D per run; N = N_active for MoEs); one of the two is required",
    )
    p.add_argument(
        "--total-flops",
        type=count("--total-flops", "FLOP count"),
        help="also find the compute-optimal D1/D2 split of a fresh run of this budget (default: no split)",
    )
    p.add_argument(
        "--upcycled-fit",
        default=DEFAULT_FITS[UPCYCLE],
        help="fit name (file stem) of the upcycled law, upcycled or joint_upcycled (default: %(default)s)",
    )
    p.add_argument(
        "--scratch-fit",
        default=DEFAULT_FITS[SCRATCH],
        help="fit name of the MoE-from-scratch chinchilla law (default: %(default)s; missing: no scratch options)",
    )
    p.add_argument(
        "--dense-fit",
        default=DEFAULT_FITS[DENSE],
        help="fit name of the dense chinchilla law (default: %(default)s; missing: no dense_continued option)",
    )
    p.add_argument(
        "--grown-fit",
        help="fit name of the upcycled D1 x D2 law fitted on grown runs: adds the option 'grow' (needs --n-grown; "
        "default: no grow option)",
    )
    p.add_argument(
        "--n-grown",
        type=count("--n-grown", "parameter count"),
        help="parameters of the grown dense model of the grow option (with --grown-fit)",
    )
    p.add_argument(
        "--expanded-fit",
        help="fit name of the upcycled D1 x D2 law fitted on expanded MoE runs: adds the option 'expand' (default: "
        "no expand option)",
    )
    p.add_argument(
        "--max-extrapolation",
        type=float,
        default=100.0,
        help="refuse to predict an option whose law inputs lie further than this factor outside the fitted range "
        "(max(value / largest, smallest / value)); thresholds and the split are only flagged (default: %(default)g)",
    )
    p.add_argument(
        "--min-margin",
        type=float,
        default=MIN_MARGIN,
        help="without bootstrap intervals, a margin below this fraction of the runner-up's loss is too close to "
        "call (default: %(default)g, i.e. 0.5%%: about the scatter of measured losses around a fitted law); "
        "with intervals, overlapping intervals are",
    )
    p.add_argument("--out", help="CSV to write, with every row's full note (default: print only)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if (args.grown_fit is None) != (args.n_grown is None):
        raise UserError("--grown-fit and --n-grown: give both (the grown runs' law and the grown model's size) or none")
    for key in ("max_extrapolation", "min_margin"):
        value = getattr(args, key)
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"--{key.replace('_', '-')}: must be a positive number, got {value}")
    roles = {UPCYCLE: args.upcycled_fit, SCRATCH: args.scratch_fit, DENSE: args.dense_fit}
    if args.grown_fit:
        roles[GROW] = args.grown_fit
    if args.expanded_fit:
        roles[EXPAND] = args.expanded_fit
    laws = Laws.load(args.fits, roles)
    extra = Budget(args.extra_tokens, "tokens") if args.extra_tokens is not None else Budget(args.extra_flops, "flops")
    table, warnings = plan(
        laws,
        args.n1,
        args.n_active,
        args.d1,
        extra,
        args.total_flops,
        args.max_extrapolation,
        args.n_grown,
        args.min_margin,
    )
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
    print(f"verdict: {table.loc[table['kind'] == 'verdict', 'note'].iloc[0]}", flush=True)
    if warnings:
        print(warnings_header(table), file=sys.stderr)
        for w in warnings:
            print(f"  {w}", file=sys.stderr)


def warnings_header(table: pd.DataFrame) -> str:
    """The first line of the warnings block: how far outside the fitted ranges the question lies, at a glance."""
    parts = []
    for kind, what in (("option", "the options"), ("threshold", "the thresholds")):
        factors = table.loc[(table["kind"] == kind) & (table["extrapolated"] == "yes"), "extrapolation"]
        if len(factors):
            parts.append(f"x{factors.max():.3g} for {what}")
    where = f"outside the fitted ranges by up to {' and '.join(parts)}; " if parts else ""
    return f"warnings: {where}each reason once, with the rows it concerns:"


if __name__ == "__main__":
    run(main)
