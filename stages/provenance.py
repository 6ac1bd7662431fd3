"""Trace any output back to the corpus packages and the code that made it.

``python -m stages.provenance results/figures/loss_vs_d2.png``   (or a fit JSON, runs.csv, eval.json, a run dir)

Every link is checked, not just followed: a figure records the sha256 of the table, fits and metrics.csv files
it drew (and its PNG that of its PDF), a fit records its table's sha256, a table row its checkpoint's sha256 and
its eval.json's values, an eval.json the sha256 of the weights and tokens it measured, a checkpoint its parent's
weights and its corpus files, a corpus manifest its packages. A link whose file changed since is printed as
MISMATCH, and ``--check`` turns any mismatch into exit status 2 with one line naming the file.

A study's outputs need no flags: ``python -m stages.provenance results/<study>/figures/loss_vs_d2.png --check``
finds the study's runs under ``results/<study>/`` (the folder above the runs table's ``tables/``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from stages.core.cli import ArgumentParser, UserError, run
from stages.report.lineage import Tracer


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.provenance", description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="a figure, fit JSON, runs.csv, eval.json, checkpoint dir or corpus manifest.json")
    p.add_argument(
        "--results",
        help="the folder the runs table's run ids are relative to (default: the folder above the table's tables/ "
        "folder, so results/<study>/ for results/<study>/tables/runs.csv; else results)",
    )
    p.add_argument("--check", action="store_true", help="exit with status 2 if any link does not verify")
    args = p.parse_args(argv)
    tracer = Tracer(Path(args.results) if args.results else None)
    tracer.trace(Path(args.path))
    print("\n".join(tracer.lines))
    if tracer.failures:
        more = f" (and {len(tracer.failures) - 1} more above)" if len(tracer.failures) > 1 else ""
        message = f"{tracer.failures[0]}{more}: a link of {args.path} that does not verify"
        if args.check:
            raise UserError(message)
        print(message, file=sys.stderr)


if __name__ == "__main__":
    run(main)
