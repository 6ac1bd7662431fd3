"""Learning-rate sweep over widths under SP and muP: does the best lr move with width (SP) or stay (muP)?

    .venv/bin/python bench/mup_lr_sweep.py [--data CORPUS] [--widths 32,64,128] [--lrs 0.001,0.003,0.01,0.03]
        [--tokens 65536] [--base-width 32] [--threads 1]

Each (parametrization, width, lr) is one dense training job run by the trainer itself
(:func:`stages.training.loop.train`: AdamW with the parametrization's groups, the cosine schedule, clipping,
the deterministic data stream), n_head fixed (head_dim grows with width) and d_ff = 4 d_model. Its score is
the validation loss at the end (the trainer's periodic evaluation). ``--data`` is a corpus directory of the
data stage; without it a synthetic corpus is written to a temporary folder: a random sparse bigram process
(each token has four possible successors), learnable but not trivial. Prints one row per (parametrization,
width): the loss at each lr and the argmin. Under muP, with the base width's best lr, the argmin should not
drift with width; a short run on a tiny corpus is a smoke test, not evidence.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.core.artifacts import sha256_file, write_json  # noqa: E402
from stages.training.job import Job  # noqa: E402
from stages.training.loop import train  # noqa: E402
from stages.training.options import TrainConfig  # noqa: E402


def synthetic_corpus(directory: Path, vocab: int = 256, tokens: int = 400_000, seed: int = 0) -> Path:
    """A corpus directory (data-stage layout) drawn from a random sparse bigram process."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, size=(vocab, 4))
    cumulative = np.cumsum(rng.dirichlet(np.ones(4), size=vocab), axis=1)
    draws = rng.random(tokens)
    ids = np.zeros(tokens, dtype=np.int64)
    for t in range(1, tokens):
        prev = ids[t - 1]
        ids[t] = successors[prev, min(3, int(np.searchsorted(cumulative[prev], draws[t])))]
    split = int(tokens * 0.9)
    ids.astype("<u2")[:split].tofile(directory / "train.bin")
    ids.astype("<u2")[split:].tofile(directory / "val.bin")
    (directory / "tokenizer.json").write_text('{"synthetic": true}\n')
    files = {
        key: {"name": name, "sha256": sha256_file(directory / name)}
        for key, name in (("train", "train.bin"), ("val", "val.bin"), ("tokenizer", "tokenizer.json"))
    }
    write_json(directory / "manifest.json", {"vocab_size": vocab, "files": files})
    return directory


def final_val_loss(run: Path) -> float:
    """The last validation loss in a run's metrics.csv."""
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_loss")]
    return float(rows[-1]["val_loss"])


def run_one(data: Path, root: Path, parametrization: str, width: int, lr: float, args: argparse.Namespace) -> float:
    """Train one job and return its final validation loss (inf when it diverged)."""
    run_id = f"{parametrization}_w{width}_lr{lr:g}"
    steps = args.tokens // (args.batch_size * args.seq_len)
    train_cfg = TrainConfig(
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lr=lr,
        warmup_steps=max(1, steps // 10),
        eval_every=steps,
        eval_tokens=args.eval_tokens,
        log_every=steps,
    )
    model = {
        "n_layer": args.n_layer,
        "d_model": width,
        "n_head": args.n_head,
        "d_ff": 4 * width,
        "parametrization": parametrization,
        "mup_base_d_model": args.base_width,
    }
    job = Job(
        kind="dense",
        run_id=run_id,
        data=data,
        tokens=args.tokens,
        out=root / run_id,
        seed=args.seed,
        data_seed=args.seed,
        train=train_cfg,
        model=model,
        threads=args.threads,
        work_dir=root / ".work" / run_id,
    )
    log = io.StringIO()
    try:
        with contextlib.redirect_stderr(log):
            train(job)
    except Exception as err:  # a diverged run (non-finite loss) scores inf; anything else is shown
        if "non-finite" in str(err):
            return float("inf")
        print(log.getvalue(), file=sys.stderr)
        raise
    return final_val_loss(root / run_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="corpus directory (default: a synthetic one)")
    parser.add_argument("--widths", default="32,64,128", help="comma-separated d_model values")
    parser.add_argument("--lrs", default="0.001,0.003,0.01,0.03", help="comma-separated peak learning rates")
    parser.add_argument("--base-width", type=int, default=32, help="mup_base_d_model")
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=65536, help="training tokens per run")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = args.data if args.data is not None else synthetic_corpus(root / "data")
        print(f"# mup lr sweep: {args.tokens} tokens per run, base width {args.base_width}, data {data}")
        print(" | ".join(["param", "width", *(f"lr={lr:g}" for lr in lrs), "argmin lr"]))
        for parametrization in ("sp", "mup"):
            for width in widths:
                losses = [run_one(data, root, parametrization, width, lr, args) for lr in lrs]
                best = lrs[min(range(len(lrs)), key=lambda i: losses[i])]
                cells = [f"{loss:.4f}" for loss in losses]
                print(" | ".join([parametrization, str(width), *cells, f"{best:g}"]), flush=True)


if __name__ == "__main__":
    main()
