"""Validation cross-entropy (nats/token) of a checkpoint on a fixed held-out token budget.

``python -m stages.evaluate --checkpoint DIR --tokens val.bin --max-tokens N --out eval.json``

The evaluation set is the first ``max_tokens`` predicted tokens of the validation shard in
non-overlapping windows of the model's training sequence length, the same for every run, so losses
are comparable across the grid. Router auxiliary losses are not included.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from stages.core.artifacts import read_json, sha256_file, write_json
from stages.model.checkpoint import WEIGHTS, load_model
from stages.core.cli import ArgumentParser, UserError, run
from stages.model.transformer import Transformer
from stages.training.runtime import configure, device, precision
from stages.corpus.shards import MANIFEST, eval_windows, read_token_file


@torch.no_grad()
def validation_loss(model: Transformer, windows: torch.Tensor, batch_size: int = 32,
                    dev: torch.device | None = None, dtype: str = "fp32") -> float:
    """Mean next-token cross-entropy over all windows (sum in float64, then divide)."""
    dev = dev or torch.device("cpu")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(dev)
        with precision(dev, dtype):
            logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss.double())
        count += batch[:, 1:].numel()
    model.train(was_training)
    return total / count


def check_shard(tokens_path: Path, vocab_size: int) -> None:
    """If a corpus manifest sits next to the shard, check the shard's sha256 and the vocabulary size."""
    manifest = tokens_path.parent / MANIFEST
    if not manifest.exists():
        return
    data = read_json(manifest)
    vocab = int(data.get("vocab_size", vocab_size))
    if vocab != vocab_size:
        raise UserError(
            f"{manifest}: vocab_size {vocab} does not match the checkpoint's vocab_size {vocab_size} "
            "(tokenizer mismatch between data and checkpoint)"
        )
    for entry in data.get("files", {}).values():
        if entry.get("name") == tokens_path.name and sha256_file(tokens_path) != entry.get("sha256"):
            raise UserError(f"{tokens_path}: sha256 does not match {manifest}; the shard was changed or truncated")


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--tokens", required=True, help="validation shard (uint16 token ids)")
    p.add_argument("--max-tokens", required=True, type=int, help="number of predicted tokens to evaluate on")
    p.add_argument("--out", required=True, help="eval.json to write")
    p.add_argument("--seq-len", type=int, default=0, help="window length (default: the checkpoint's max_seq_len)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args(argv)
    if args.max_tokens <= 0:
        raise UserError(f"--max-tokens: must be positive, got {args.max_tokens}")
    configure(args.threads)
    dev = device(args.device)
    model, _ = load_model(args.checkpoint)
    seq_len = args.seq_len or model.cfg.max_seq_len
    tokens_path = Path(args.tokens)
    check_shard(tokens_path, model.cfg.vocab_size)
    windows = eval_windows(read_token_file(tokens_path, model.cfg.vocab_size), seq_len, args.max_tokens)
    model.to(dev)
    loss = validation_loss(model, windows, args.batch_size, dev, args.dtype)
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
