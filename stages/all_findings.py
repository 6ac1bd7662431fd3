"""Every study's findings in one table: ``results/all_findings.csv`` (and ``.md``), for the docs and a quick read.

``python -m stages.all_findings --results results --out results/all_findings``

Stacks each study's ``tables/findings.csv`` under ``--results`` with its study name, and the commit and machine
its run records hold (the library: stages.report.verdicts.py); ``make docs`` runs it before regenerating the docs
pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.core.artifacts import write_text
from stages.core.cli import ArgumentParser, run
from stages.report.verdicts import collect


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.all_findings", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results", help="the results folder holding the studies")
    p.add_argument("--out", default="results/all_findings", help="output prefix: writes <out>.csv and <out>.md")
    args = p.parse_args(argv)
    table = collect(Path(args.results))
    write_text(Path(f"{args.out}.csv"), table.to_csv(index=False, lineterminator="\n"))
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    rows = "".join("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |\n" for row in table.values)
    write_text(Path(f"{args.out}.md"), header + rows)
    studies = table["study"].nunique()
    print(f"{args.out}.csv: {len(table)} findings of {studies} {'study' if studies == 1 else 'studies'}")


if __name__ == "__main__":
    run(main)
