"""Print a grid's compute before anything runs: FLOPs and GPU-hours per job kind, at a stated MFU.

``python -m stages.ledger --configfile config/paper.yaml [--mfu 0.35] [--gpu-tflops 989]``

It ends with the walltime parts: which training jobs outlast their rule's time limit at the site's estimate and
are trained as chained parts (stages.workflow.walltime).

The config is built as Snakemake builds it (config/config.yaml, then each --configfile on top), and the jobs
are the DAG's: wsd stable runs counted once, cooldowns per budget, evaluations as forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence

from stages.core.cli import ArgumentParser, UserError, run
from stages.workflow.accounting import format_ledger, load_config


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m stages.ledger", description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", action="append", default=[], help="config overlays (repeatable), as Snakemake")
    p.add_argument(
        "--mfu", type=float, default=None, help="model FLOPs utilisation assumed (default: the config's site.mfu, 0.35)"
    )
    p.add_argument(
        "--gpu-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s of one GPU (default: the config's site.gpu_tflops, 989: H100/H200 SXM dense bf16)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.mfu is not None and not 0 < args.mfu <= 1:
        raise UserError(f"--mfu: expected a fraction in (0, 1], got {args.mfu}")
    if args.gpu_tflops is not None and args.gpu_tflops <= 0:
        raise UserError(f"--gpu-tflops: must be positive, got {args.gpu_tflops}")
    print(format_ledger(load_config(args.configfile), args.mfu, args.gpu_tflops))


if __name__ == "__main__":
    run(main)
