"""Trace any output back to the corpus packages and the code that made it.

``python -m stages.provenance results/figures/loss_vs_d2.png``   (or a fit JSON, runs.csv, eval.json, a run dir)

Every link is checked, not just followed: a figure records the sha256 of the table and fits it drew,
a fit records its table's sha256, a table row its checkpoint's sha256, a checkpoint its parent's weights
and its corpus files, a corpus manifest its packages. A link whose file changed since is printed as
MISMATCH, and ``--check`` turns any mismatch into exit status 2.
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
    p.add_argument("--results", default="results", help="the results root that run ids are relative to")
    p.add_argument("--check", action="store_true", help="exit with status 2 if any link does not verify")
    args = p.parse_args(argv)
    tracer = Tracer(Path(args.results))
    tracer.trace(Path(args.path))
    print("\n".join(tracer.lines))
    if tracer.mismatches:
        message = f"{args.path}: {tracer.mismatches} link(s) do not verify (MISMATCH/MISSING above)"
        if args.check:
            raise UserError(message)
        print(message, file=sys.stderr)


if __name__ == "__main__":
    run(main)
