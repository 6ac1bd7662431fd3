"""Train one run of the grid: dense, MoE from scratch, upcycled MoE, dense continued or grown dense.

``python -m stages.train --kind dense --run-id dense/s/d1_250K --data results/data/pdprose --tokens 250K \\
    --model '{"n_layer": 2, "d_model": 64, "n_head": 2, "d_ff": 256}' --train '{"lr": 0.005, ...}' \\
    --seed 1 --data-seed 2 --out results/dense/s/d1_250K``

Every option that changes the result arrives as one validated JSON group (``--train``: the training
options, ``--model``: a fresh model's shape); the flags name paths, the run's identity and threads.
The run directory receives the checkpoint, its run record and ``metrics.csv``.

Started by ``torchrun --nproc_per_node N -m stages.train ...`` or as the N tasks of ``srun ... python -m
stages.train ...``, the N processes train one run data-parallel and rank 0 writes it
(:mod:`stages.training.distributed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.core.cli import ArgumentParser, parse_json_object, parse_tokens, run
from stages.core.options import from_json
from stages.training.job import KINDS, Job
from stages.training.loop import train
from stages.training.options import DIST_TIMEOUT, TrainConfig


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m stages.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--run-id", required=True, help="run identity, e.g. dense/s/d1_250K (names the scratch folder)")
    p.add_argument("--data", required=True, help="corpus directory with manifest.json, train.bin, tokenizer.json")
    p.add_argument("--tokens", required=True, help="training tokens of this run (e.g. 250K, 1M)")
    p.add_argument("--out", help="run directory to write (a stable segment writes --state-out instead)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="JSON model shape for a fresh model (vocab_size, max_seq_len filled in)")
    src.add_argument("--init", help="checkpoint directory to continue from (upcycled MoE, grown or dense parent)")
    p.add_argument("--train", default="{}", help="JSON training options (keys of the config's train section)")
    p.add_argument("--labels", default="{}", help="JSON object of grid labels recorded in the run record")
    p.add_argument("--seed", type=int, required=True, help="initialisation seed (derived from the run identity)")
    p.add_argument("--data-seed", type=int, required=True, help="seed of the shared data order")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-every", type=int, default=0, help="progress checkpoint every N steps (0: never)")
    p.add_argument(
        "--dist-timeout",
        type=int,
        default=DIST_TIMEOUT,
        help="seconds a process of a multi-process run waits for the others (rendezvous, each all-reduce) before it "
        "ends with one line naming the rank that died or stalled",
    )
    p.add_argument("--work-dir", default=None, help="scratch folder for progress (default results/.work/<run-id>)")
    p.add_argument(
        "--start-state",
        help="the state to continue from: a wsd stable run's branch state (a cooldown or the next stable segment), "
        "or a part state of this same job (the previous walltime part)",
    )
    p.add_argument("--stop-step", type=int, default=0, help="stop after this step (a stable segment, or a part)")
    p.add_argument("--state-out", help="where the state at --stop-step goes")
    p.add_argument(
        "--part",
        action="store_true",
        help="the job is one walltime part of a longer one: its state at --stop-step is continued only by the rest "
        "of this job (any lr policy, any step before the last)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    job = Job(
        kind=args.kind,
        run_id=args.run_id,
        data=Path(args.data),
        tokens=parse_tokens(args.tokens, "--tokens"),
        out=Path(args.out) if args.out else None,
        seed=args.seed,
        data_seed=args.data_seed,
        train=from_json(TrainConfig, args.train, "--train"),
        model=parse_json_object(args.model, "--model") if args.model else None,
        init=Path(args.init) if args.init else None,
        labels=parse_json_object(args.labels, "--labels"),
        threads=args.threads,
        save_every=args.save_every,
        dist_timeout=args.dist_timeout,
        work_dir=Path(args.work_dir) if args.work_dir else None,
        start_state=Path(args.start_state) if args.start_state else None,
        stop_step=args.stop_step,
        state_out=Path(args.state_out) if args.state_out else None,
        part=args.part,
    )
    if job.train.backend == "nanotron":
        from stages.training.nanotron_backend import train_nanotron

        train_nanotron(job)
        return
    train(job)


if __name__ == "__main__":
    run(main)
