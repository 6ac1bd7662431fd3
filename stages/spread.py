"""Compare the headline numbers of one study run on two machines: the spread its published numbers carry.

``python -m stages.spread --results results --against other/results --out results/tables/spread``

Both folders are study roots of the same config and code (say, the demo on this machine and on another one, or
with ``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2``, another kernel path on the same one). Writes
``<out>.csv`` and ``<out>.md``: validation losses, fit parameters, held-out errors, D2* and verdicts side by side
(stages.report.headlines), a changed verdict marked fragile.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.core.artifacts import write_text
from stages.core.cli import ArgumentParser, run
from stages.report.headlines import headlines, spread_table


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.spread", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="the reference study root (tables/, fits/)")
    p.add_argument("--against", required=True, help="the same study run elsewhere")
    p.add_argument("--out", required=True, help="output prefix: writes <out>.csv and <out>.md")
    args = p.parse_args(argv)
    table = spread_table(headlines(Path(args.results)), headlines(Path(args.against)))
    write_text(Path(f"{args.out}.csv"), table.to_csv(index=False, lineterminator="\n"))
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    rows = "".join("| " + " | ".join(_cell(v) for v in row) + " |\n" for row in table.values)
    write_text(Path(f"{args.out}.md"), header + rows)
    fragile = int(table["note"].str.startswith("fragile").sum())
    print(
        header
        + rows
        + f"\n{len(table)} headlines, {fragile} fragile (a verdict changes, or D2* exists on one side only)"
    )


if __name__ == "__main__":
    run(main)
