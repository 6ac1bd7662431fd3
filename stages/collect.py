"""Collect every evaluated run into ``results/tables/runs.csv`` (+ ``.parquet``): the input of all fits.

``python -m stages.collect --evals results/eval/**/eval.json --out results/tables/runs.csv``
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

from stages.core.artifacts import atomic_path, write_text
from stages.core.cli import ArgumentParser, run
from stages.report.runs_table import collect


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.collect", description=__doc__.split("\n\n")[0])
    p.add_argument("--evals", nargs="+", required=True, help="eval.json files")
    p.add_argument("--out", required=True, help="runs.csv to write")
    p.add_argument("--parquet", default=None, help="runs.parquet to write (default: next to --out)")
    args = p.parse_args(argv)
    table = collect(args.evals)
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    write_text(args.out, buf.getvalue())
    parquet = Path(args.parquet) if args.parquet else Path(args.out).with_suffix(".parquet")
    with atomic_path(parquet) as tmp:
        table.to_parquet(tmp, index=False, engine="pyarrow")
    kinds = table["kind"].value_counts().sort_index()
    print(f"{args.out}: {len(table)} runs ({', '.join(f'{k} {v}' for k, v in kinds.items())})", file=sys.stderr)


if __name__ == "__main__":
    run(main)
