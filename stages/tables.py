"""The fitted-parameter table (the paper's Table 2 analogue) and the model comparison, as CSV and Markdown.

``python -m stages.tables --fits results/fits/*.json --out results/fits/fit_params``

Writes ``<out>.csv`` and ``<out>.md`` (one row per fit, named by its file stem) and prints the Markdown; the
columns, AIC and BIC and the ``diagnostics`` column ("ok" or the fit's flags) included, are explained in
stages/report/fit_table.py. Flagged fits are also listed on stderr, one "fit WARNING" line each.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from stages.core.artifacts import read_json, write_text
from stages.core.cli import ArgumentParser, UserError, run
from stages.report.fit_table import fit_row, markdown


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--fits", nargs="+", required=True, help="fit JSON files (named by their file stem)")
    p.add_argument("--out", required=True, help="output prefix: writes <out>.csv and <out>.md")
    args = p.parse_args(argv)
    rows = []
    for path in args.fits:
        fit = read_json(path)
        if "law" not in fit or "params" not in fit or "n_points" not in fit:
            raise UserError(f"{path}: not a fit JSON written by stages.fit")
        rows.append(fit_row(Path(path).stem, fit))
    for row in rows:
        if row["diagnostics"] not in ("ok", ""):
            print(f"fit WARNING: {row['fit']}: {row['diagnostics']}", file=sys.stderr)
    table = pd.DataFrame(rows)
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n", float_format="%.10g")
    out = Path(args.out)
    write_text(out.with_suffix(".csv"), buf.getvalue())
    write_text(out.with_suffix(".md"), markdown(table))
    print(markdown(table))


if __name__ == "__main__":
    run(main)
