"""Paper figures from the runs table and the fitted laws (seaborn; PNG and PDF with deterministic bytes).

``python -m stages.figures loss_vs_d2 --runs results/tables/runs.csv --fit results/fits/upcycled.json \\
    --out results/figures/loss_vs_d2``

Draws one figure of stages/report/plots (registry.py; stages/report/figure_specs.py says what each draws); each
``--fit`` is known by its file stem (e.g. ``upcycled``, ``scratch_chinchilla``). Writes ``<out>.png`` and
``<out>.pdf``, each carrying the sha256 of the table and fits it was drawn from (``stages.provenance`` reads it
back). A figure whose fit is absent or did not converge is replaced by one that says why, with a warning, so that
one diverged fit does not stop a study.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from stages.core.artifacts import read_json, sha256_file
from stages.core.cli import ArgumentParser, UserError, run
from stages.laws.table import read_table
from stages.report.figure_specs import FIGURE_SPECS
from stages.report.plots.common import Fits, MissingFit, message_figure, save, style
from stages.report.plots.curves import read_curves
from stages.report.plots.registry import FIGURES


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.figures", description=__doc__.split("\n\n")[0])
    p.add_argument("figure", choices=sorted(FIGURES))
    p.add_argument("--runs", required=True, help="runs table (CSV or Parquet)")
    p.add_argument("--fit", action="append", default=[], help="fit JSON(s) to draw, known by their file stem")
    p.add_argument("--out", required=True, help="output prefix; writes <out>.png and <out>.pdf")
    p.add_argument(
        "--metrics",
        help="study root holding <run_id>/metrics.csv of every run of the table (training_curves draws them)",
    )
    args = p.parse_args(argv)
    runs = read_table(args.runs)
    fits: Fits = {}
    for path in args.fit:
        fit = read_json(path)
        if not isinstance(fit, dict) or "law" not in fit or "params" not in fit:
            raise UserError(f"{path}: not a fit JSON (needs 'law' and 'params')")
        if any(v is None for v in fit["params"].values()):
            print(f"warning: {path}: the fit did not converge to finite parameters; not drawn", file=sys.stderr)
            continue
        fits[Path(path).stem] = fit
    record = {
        "figure": args.figure,
        "runs": args.runs,
        "runs_sha256": sha256_file(args.runs),
        "fits": {path: sha256_file(path) for path in args.fit},
    }
    extra = {}
    if args.metrics is not None and FIGURE_SPECS[args.figure].metrics:
        curves, paths = read_curves(runs, args.metrics)
        record["metrics"] = {str(path): sha256_file(path) for path in paths.values()}
        extra["curves"] = curves
    style()
    try:
        fig = FIGURES[args.figure](runs, fits, **extra)
    except MissingFit as err:
        print(f"warning: {err}", file=sys.stderr)
        fig = message_figure(f"{err}\n(see the fits' JSON and logs/fits/)")
    save(fig, args.out, record)
    print(f"wrote {args.out}.png and {args.out}.pdf", file=sys.stderr)


if __name__ == "__main__":
    run(main)
