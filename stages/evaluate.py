"""Validation cross-entropy (nats/token) of a checkpoint on a fixed held-out token budget.

``python -m stages.evaluate --checkpoint DIR --tokens val.bin --max-tokens N --out eval.json``

eval.json holds val_loss (nats/token), the tokens and window length it was measured on, and the sha256 of
the checkpoint's weights and of the token shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from stages.core.artifacts import sha256_file, write_json
from stages.core.cli import ArgumentParser, UserError, run
from stages.core.options import add_flags, from_flags
from stages.corpus.shards import eval_windows
from stages.model.checkpoint import WEIGHTS, load_model
from stages.training.evaluation import read_checked_shard, validation_loss
from stages.training.options import EvalConfig
from stages.training.runtime import configure, device


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument(
        "--tokens",
        required=True,
        help="validation shard (ids of the dtype its manifest names; without one, uint16 if the vocabulary fits)",
    )
    p.add_argument("--out", required=True, help="eval.json to write")
    add_flags(p, EvalConfig)
    p.add_argument("--seq-len", type=int, default=0, help="window length (default: the checkpoint's max_seq_len)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args(argv)
    options = from_flags(EvalConfig, args)
    configure(args.threads)
    dev = device(args.device)
    model, record = load_model(args.checkpoint)
    seq_len = args.seq_len or model.cfg.max_seq_len
    if not 0 < seq_len <= model.cfg.max_seq_len:  # RoPE tables and the model's promise end at max_seq_len
        raise UserError(
            f"--seq-len {args.seq_len}: must lie in 1..{model.cfg.max_seq_len}, the max_seq_len of "
            f"{Path(args.checkpoint) / 'config.json'}"
        )
    tokens_path = Path(args.tokens)
    tokens = read_checked_shard(
        tokens_path, model.cfg.vocab_size, record.data.tokenizer_sha256, f"--checkpoint {args.checkpoint}"
    )
    windows = eval_windows(tokens, seq_len, options.max_tokens)
    model.to(dev)
    loss = validation_loss(model, windows, options.batch_size, dev, args.dtype)
    if not torch.isfinite(torch.tensor(loss)):
        raise UserError(f"{args.checkpoint}: validation loss is not finite ({loss})")
    result = {
        "val_loss": loss,
        "tokens": int(windows.shape[0] * seq_len),
        "seq_len": seq_len,
        "checkpoint": str(args.checkpoint),
        "checkpoint_sha256": sha256_file(Path(args.checkpoint) / WEIGHTS),
        "tokens_file": str(args.tokens),
        "tokens_sha256": sha256_file(tokens_path),
        "dtype": args.dtype,
    }
    write_json(args.out, result)
    print(f"val_loss {loss:.5f} nats/token on {result['tokens']} tokens ({args.checkpoint})")


if __name__ == "__main__":
    run(main)
