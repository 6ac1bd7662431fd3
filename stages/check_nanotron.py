"""Check the nanotron backend against nanotron's own code, for the grid of a config (run where nanotron is).

``python -m stages.check_nanotron --configfile config/paper.yaml config/paper_nanotron.yaml --data DIR --out DIR``

For every training job of the grid: its nanotron YAML parses with nanotron's ``get_config_from_file`` and
nanotron's scheduler gives our learning rates; a job nanotron cannot train is listed with its refusal. With
``--data`` (a corpus directory of the data stage) the first steps of one job's token stream are converted and
read back with nanotron's reader and sampler. For each model shape, our export loaded by nanotron gives our
logits. Exit status 2 if anything does not verify; the report is also written to ``OUT/check.json``.
The checks: :mod:`stages.interop.nanotron_check`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.core.artifacts import write_json
from stages.core.cli import ArgumentParser, UserError, run
from stages.interop.nanotron_check import failures, run_checks


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.check_nanotron", description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", nargs="+", default=[], help="config overlays on config/config.yaml, as Snakemake")
    p.add_argument("--out", required=True, help="folder for the YAMLs, exports and converted data (and check.json)")
    p.add_argument("--data", help="corpus directory (manifest.json, train.bin, tokenizer.json) for the data check")
    p.add_argument("--dp", type=int, default=8, help="data-parallel GPUs the YAMLs and the sampler check assume")
    p.add_argument("--data-steps", type=int, default=4, help="optimizer steps of the stream the data check converts")
    p.add_argument(
        "--logits-layers", type=int, default=0, help="check logits on each model's first N blocks only (0: all)"
    )
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: patch nanotron's CUDA-only calls (needs pure-torch flash_attn / grouped_gemm stand-ins)",
    )
    args = p.parse_args(argv)
    if args.dp < 1 or args.data_steps < 1 or args.logits_layers < 0:
        raise UserError("--dp and --data-steps must be >= 1, --logits-layers >= 0")
    out = Path(args.out)
    data = Path(args.data) if args.data else None
    report = run_checks(args.configfile, out, data, args.dp, args.device, args.data_steps, args.logits_layers)
    write_json(out / "check.json", report)
    bad = failures(report)
    if bad:
        raise UserError(f"{out / 'check.json'}: {len(bad)} check(s) failed, first: {bad[0]}")
    print(f"{out / 'check.json'}: every check passed ({len(report['refused'])} job(s) refused)")


if __name__ == "__main__":
    run(main)
