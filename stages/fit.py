"""Fit a scaling law to any table: multi-start L-BFGS-B, BFGS polish, cluster bootstrap, hold-out errors.

The default is Chinchilla Approach 3 done right: log-sum-exp parameters, the SUM of Huber(delta=1e-3) on
log residuals, L-BFGS-B with the analytic gradient from every point of a start grid, the best start polished
by BFGS. The optimiser always sees the summed objective, so ``--reduction mean`` changes only the reported
value, never the optimum (averaging with scipy's default tolerances is what stopped Hoffmann et al.'s fit
early). ``mle`` is Epoch's Huber log-likelihood with a free scale, which degenerates to least absolute
deviations; ``l1`` is that estimator stated directly.

Outputs are byte-deterministic: the start order, the reduction order and the bootstrap resamples are
fixed, and timings go to stdout only.

Every fit JSON carries ``diagnostics`` (stages.laws.diagnostics): parameters at a bound or collapsed (a floor
run to 0, an exponent <= 0 or > 3, a coefficient > 1e12), parameters the data do not identify (spread over
the near-best starts, flat or ill-conditioned Hessian), and the bootstrap's health (too few clusters, resamples
at a bound, zero-width intervals, which are written as null with the reason). A flagged fit says so in one
line on stderr starting "fit WARNING" (or "fit FAILED" with --strict), in the printed summary, in the fit
table's diagnostics column and in the titles of the figures that draw it.

Exit status: 2 for unusable input (bad flags, missing or non-finite columns, too few points, no finite
optimum; one line on stderr). A flagged but finite fit exits 0 with the warning and its JSON written: it is
still the best the data support, a study's DAG goes on, and the tables and figures say what is wrong with
it, which a failed job's deleted output could not. --strict makes any flag an error: the JSON is written,
"fit FAILED" is printed and the exit status is 1 (for scripts and studies that must not go on with a fit
that says nothing).

    python -m stages.fit --table runs.csv --law upcycled --map loss=val_loss --where "kind == 'upcycled'" \\
        --bootstrap 1000 --seed 0 --holdout "D2 > 1e9" --out results/fits/upcycled.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from stages.core.artifacts import sha256_file, write_json, write_text
from stages.core.cli import ArgumentParser, UserError, run
from stages.core.options import as_dict, from_json, from_mapping
from stages.laws.bootstrap import bootstrap
from stages.laws.diagnostics import fit_diagnostics
from stages.laws.fitter import fit_law, worker_pool
from stages.laws.forms import LAWS, LOSS, get_law
from stages.laws.objective import DEFAULT_DELTA, OBJECTIVES
from stages.laws.options import FitConfig
from stages.laws.quality import fit_quality, holdout_report, sanity_checks, statsmodels_report
from stages.laws.table import parse_map, prepare, read_table, select


def build_parser() -> ArgumentParser:
    laws = "\n".join(f"  {law.name:30} {', '.join((*law.columns, LOSS)):18} {law.formula}" for law in LAWS.values())
    p = ArgumentParser(
        prog="python -m stages.fit",
        description=__doc__.split("\n\n")[0],
        epilog=f"laws (name, columns, form; natural logs, raw token and parameter counts):\n{laws}\n"
        "P is the sparsity N_total / N_active; N1 the parameters of the dense model that was upcycled.\n\n"
        "Exit status: 0 for a fit, also a flagged one (a parameter collapsed, at a bound or not identified, an\n"
        "unhealthy bootstrap): its JSON is written with 'diagnostics' and stderr says 'fit WARNING: <flags>';\n"
        "1 for a flagged fit under --strict ('fit FAILED: <flags>', JSON written); 2 for unusable input.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--table", required=True, help="CSV or Parquet table with the law's columns (see --map)")
    p.add_argument("--law", choices=sorted(LAWS), metavar="LAW", help="law to fit (see below)")
    p.add_argument("--out", required=True, help="fit JSON to write")
    p.add_argument(
        "--spec",
        help="the fit as JSON (a config 'fits' entry: law, where, map, holdout, bootstrap, grid); "
        "flags given as well override its keys",
    )
    p.add_argument("--bootstrap", type=int, metavar="N", help="cluster-bootstrap resamples (default 0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (numpy default_rng)")
    p.add_argument("--holdout", help="pandas query; matching rows are left out of the fit and predicted")
    p.add_argument("--where", help="pandas query applied first: only matching rows are used at all")
    p.add_argument(
        "--map",
        help="law columns from table columns, e.g. N=N_active,D=D,loss=val_loss; --where and --holdout "
        "see the table's columns plus these law names",
    )
    p.add_argument("--group", help="bootstrap cluster column (default: run_id if present, else rows)")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="huber",
        help="huber: sum of Huber(delta) on log residuals (default); l1: sum |log residual|; "
        "mle: Huber log-likelihood with free scale (Epoch AI)",
    )
    p.add_argument("--delta", type=float, default=DEFAULT_DELTA, help="Huber threshold on log residuals")
    p.add_argument(
        "--reduction",
        choices=("sum", "mean"),
        default="sum",
        help="how the reported objective is reduced over rows (the optimum does not depend on it)",
    )
    p.add_argument(
        "--grid",
        help="'default' (the law's full start grid, the default) or N: N starts evenly spaced through it",
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes for starts/bootstrap")
    p.add_argument("--summary", help="also write the statsmodels text summaries here")
    p.add_argument(
        "--strict",
        action="store_true",
        help="a flagged fit (see diagnostics in the JSON) is an error: 'fit FAILED' and exit status 1 "
        "(default: 'fit WARNING' on stderr and exit 0)",
    )
    return p


def fit_options(args: argparse.Namespace) -> FitConfig:
    """The fit's option group: ``--spec`` (if given) with the explicit flags laid over it."""
    values = as_dict(from_json(FitConfig, args.spec, "--spec")) if args.spec else {}
    for name in ("law", "where", "holdout", "bootstrap", "grid"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if "law" not in values:
        raise UserError("--law: required (or give it in --spec)")
    if isinstance(values.get("grid"), str) and values["grid"].isdigit():
        values["grid"] = int(values["grid"])
    options = from_mapping(FitConfig, values, "fit")
    if args.map is not None:
        options = dataclasses.replace(options, map={**options.map, **parse_map(args.map, get_law(options.law))})
    return options


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    options = fit_options(args)
    # the fit JSON records these as the command line gave them: unset filters as null, the grid as text
    args.law, args.bootstrap, args.grid = options.law, options.bootstrap, str(options.grid)
    args.where, args.holdout = options.where or None, options.holdout or None
    for flag, value, low in (("--bootstrap", args.bootstrap, 0), ("--workers", args.workers, 1)):
        if value < low:
            raise UserError(f"{flag}: must be >= {low}, got {value}")
    if args.grid == "default":
        grid = None
    elif args.grid.isdigit():
        grid = int(args.grid)
    else:
        raise UserError(f"--grid: expected 'default' or a number of starts, got {args.grid!r}")
    law = get_law(args.law)
    mapping = parse_map(",".join(f"{k}={v}" for k, v in sorted(options.map.items())), law)
    frame = prepare(read_table(args.table), law, mapping, args.where, args.table)
    group = args.group or ("run_id" if "run_id" in frame.columns else None)
    if group is not None and group not in frame.columns:
        raise UserError(f"{args.table}: missing column {group!r} given by --group")

    held = np.zeros(len(frame), bool)
    if args.holdout:
        held = select(frame, args.holdout, "--holdout", args.table)
        if held.all():
            raise UserError(f"--holdout {args.holdout!r} on {args.table}: removes all rows from the fit")
        if not held.any():
            raise UserError(f"--holdout {args.holdout!r} on {args.table}: matches no rows")
    train = frame[~held].reset_index(drop=True)

    with worker_pool(args.workers) as pool:
        t0 = time.perf_counter()
        fit = fit_law(
            train,
            law.name,
            objective=args.objective,
            delta=args.delta,
            reduction=args.reduction,
            grid=grid,
            pool=pool,
            source=args.table,
        )
        t1 = time.perf_counter()
        out: dict[str, Any] = {
            **fit.as_dict(),
            "formula": law.formula,
            "columns": {c: mapping.get(c, c) for c in (*law.columns, LOSS)},
            "table": args.table,
            "table_sha256": sha256_file(args.table),
            "where": args.where,
            "grid": args.grid,
            "ranges": {c: [float(train[c].min()), float(train[c].max())] for c in law.columns},
            "fit": fit_quality(law, fit.params, train),
            "checks": sanity_checks(law, fit.params, train),
            "holdout": holdout_report(law, fit.params, frame[held], args.holdout) if args.holdout else None,
        }
        if law.derived is not None:
            out["derived"] = law.derived(fit.params, frame)
        if args.bootstrap:
            groups = train[group] if group else None
            out["bootstrap"] = {
                **bootstrap(fit, args.bootstrap, args.seed, groups, pool, frame),
                "group": group or "row",
            }
        out["diagnostics"] = fit_diagnostics(fit, train, out.get("bootstrap"))
    t2 = time.perf_counter()
    sm, text = statsmodels_report(law, fit.params, train)
    if sm:
        out["statsmodels"] = sm
    if args.summary:
        write_text(args.summary, text)
    write_json(args.out, out)
    print(
        f"fit {law.name} ({args.objective}): {fit.n_points} points, {fit.n_starts} starts "
        f"({fit.n_starts_at_best} at best), objective {fit.objective:.12g}, {t1 - t0:.2f} s"
        + (f"; bootstrap {args.bootstrap}: {t2 - t1:.2f} s" if args.bootstrap else "")
    )
    print("  " + ", ".join(f"{k}={v:.6g}" for k, v in fit.params.items()))
    summary = out["diagnostics"]["summary"]
    print(f"  diagnostics: {summary}")
    if summary != "ok":
        verdict = "FAILED" if args.strict else "WARNING"
        print(f"fit {verdict}: {args.out}: {summary} (see 'diagnostics' in the JSON)", file=sys.stderr)
        if args.strict:
            sys.exit(1)


if __name__ == "__main__":
    run(main)
