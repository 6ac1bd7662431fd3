"""Regenerate the docs' tables of measured results from a study's outputs.

``python -m stages.docs --results results --out docs``   (``make docs``)

Every ``docs/*.md`` page keeps its prose; the blocks between ``<!-- generated: VIEW SOURCE ... -->`` and
``<!-- end generated -->`` are rebuilt from the study files they name (runs.csv, fit JSON, fit_params.csv,
findings.csv, plan.csv). A block whose source is missing keeps its numbers. Each block states the commit and the
machine; they default to this checkout's ``git rev-parse HEAD`` and this machine, and ``--commit`` and
``--machine`` name where the results were made when they came from elsewhere (a cluster). Views and options:
stages/report/generated.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.core.artifacts import write_text
from stages.core.cli import ArgumentParser, UserError, run
from stages.report.generated import Origin, checkout_commit, regenerate, this_machine


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.docs", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results", help="the results root the pages' results/... paths name")
    p.add_argument("--out", default="docs", help="the folder of Markdown pages to update in place")
    p.add_argument("--commit", help="the commit the results were made with (default: git rev-parse HEAD)")
    p.add_argument("--machine", help="the machine that made them (default: this one's cores and platform)")
    args = p.parse_args(argv)
    pages = Path(args.out)
    if not pages.is_dir():
        raise UserError(f"--out {pages}: not a folder of Markdown pages")
    origin = Origin(commit=args.commit or checkout_commit(Path.cwd()), machine=args.machine or this_machine())
    for page in sorted(pages.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        update = regenerate(text, Path(args.results), origin, str(page))
        if update.text != text:
            write_text(page, update.text)
        if update.generated or update.kept:
            missing = ", ".join(dict.fromkeys(update.kept))
            kept = f", kept {len(update.kept)} (missing: {missing})" if update.kept else ""
            print(f"{page}: regenerated {len(update.generated)}{kept}")


if __name__ == "__main__":
    run(main)
