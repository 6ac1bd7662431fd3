"""The papers' findings checked on this study: one row per claim with the measured number, interval and verdict.

``python -m stages.findings --runs results/tables/runs.csv --fits results/fits --out results/tables/findings``

Writes ``<out>.csv`` and ``<out>.md`` and prints the Markdown. Verdicts (reproduced / not at this scale /
contradicted / not measured) and how seed noise enters them are explained in stages/report/claims.py; rows that
compare two arms are judged by paired noise where their pairs have >= 3 seeds (stages/report/paired.py).
Fits are found by role in ``--fits`` (``--dense-fit`` etc. name the files); a missing fit gives a
"not measured" row, never an error.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from stages.core.artifacts import read_json, write_text
from stages.core.cli import ArgumentParser, UserError, run
from stages.core.kinds import UPCYCLED
from stages.laws.crossing import d2_crossings, predicted_gap
from stages.laws.fitted import Laws
from stages.laws.roles import DEFAULT_FITS, DENSE, SCRATCH, UPCYCLE
from stages.laws.table import read_table
from stages.report import claims as F


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.findings", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="runs table (results/tables/runs.csv)")
    p.add_argument("--fits", required=True, help="directory of fit JSON files")
    p.add_argument("--dense-fit", default=DEFAULT_FITS[DENSE], help="fit of the dense law (file stem)")
    p.add_argument("--upcycled-fit", default=DEFAULT_FITS[UPCYCLE], help="fit of the upcycled D1 x D2 law (file stem)")
    p.add_argument("--scratch-fit", default=DEFAULT_FITS[SCRATCH], help="fit of the scratch MoE law (file stem)")
    p.add_argument("--out", required=True, help="output prefix: writes <out>.csv and <out>.md")
    args = p.parse_args(argv)
    runs = read_table(args.runs)
    missing = [c for c in ("run_id", "kind", "val_loss") if c not in runs.columns]
    if missing:
        raise UserError(f"{args.runs}: missing columns {missing} (a runs table written by stages.collect)")
    fits_dir = Path(args.fits)
    fits = {f.stem: read_json(f) for f in sorted(fits_dir.glob("*.json"))}
    noise = F.seed_noise(runs)
    cells = F.cell_means(runs)
    seeds = F.seed_cells(runs)  # each seed's cells: the paired comparisons (stages/report/paired.py)
    crossings = predicted = None
    if args.upcycled_fit in fits and args.scratch_fit in fits:
        laws = Laws(fits={UPCYCLE: fits[args.upcycled_fit], SCRATCH: fits[args.scratch_fit]})
        n1 = float(cells.loc[cells["kind"] == UPCYCLED, "N_dense"].max())

        def crossings(d1: float) -> tuple[list[float], bool]:
            return d2_crossings(laws, n1, d1, 0.0)

        def predicted(d1: float, d2: float) -> float:
            return predicted_gap(laws, n1, d1, d2)

    rows = [
        F.noise_row(noise),
        F.monotone_row(cells, noise),
        F.dense_law_row(fits.get(args.dense_fit)),
        F.interaction_row(fits.get(args.upcycled_fit), args.upcycled_fit),
        F.threshold_row(cells, noise, crossings, seeds, predicted),
        F.dense_cont_row(cells, noise, seeds),
        F.grown_row(cells, noise, seeds),
        F.shrink_perturb_row(cells, noise, seeds),
        F.expansion_row(cells, noise, seeds),
        F.expansion_selection_row(cells, noise, seeds),
        F.lr_policy_row(cells, noise, seeds),
        F.experts_row(cells, noise, seeds),
        F.experts_budget_row(cells, noise, seeds),
        F.granularity_row(cells, noise, seeds),
        F.function_preserving_row(cells, noise, seeds),
        F.wsd_cost_row(runs),
        *F.heldout_rows(fits),
    ]
    table = F.findings_table(rows)
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    out = Path(args.out)
    write_text(out.with_suffix(".csv"), buf.getvalue())
    write_text(out.with_suffix(".md"), F.markdown(table))
    print(F.markdown(table))


if __name__ == "__main__":
    run(main)
