"""Validation cross-entropy (nats/token) of a model on a fixed held-out token budget.

The evaluation set is the first ``max_tokens`` predicted tokens of the validation shard in non-overlapping
windows of the model's training sequence length, the same for every run, so losses are comparable across
the grid. Router auxiliary losses are not included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stages.core.artifacts import sha256_file
from stages.core.cli import UserError
from stages.corpus.shards import MANIFEST, TOKEN_DTYPES, open_corpus, read_token_file, token_dtype
from stages.model.transformer import Transformer
from stages.training.runtime import precision


@torch.no_grad()
def validation_loss(
    model: Transformer,
    windows: torch.Tensor,
    batch_size: int = 32,
    dev: torch.device | None = None,
    dtype: str = "fp32",
) -> float:
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


def read_checked_shard(tokens_path: Path, vocab_size: int, tokenizer_sha256: str, who: str) -> np.ndarray:
    """The token shard, checked against the manifest beside it (if any) and the checkpoint's tokenizer; its ids
    are of the manifest's dtype, or without a manifest of the narrowest dtype that holds ``vocab_size`` ids (the
    data stage's choice)."""
    dtype = TOKEN_DTYPES[token_dtype(vocab_size)]
    if (tokens_path.parent / MANIFEST).exists():
        corpus = open_corpus(tokens_path.parent, verify=())
        dtype = corpus.dtype
        corpus.check_checkpoint(vocab_size, tokenizer_sha256, who)
        for split, entry in corpus.manifest["files"].items():
            if entry.get("name") == tokens_path.name and sha256_file(tokens_path) != corpus.sha256(split):
                raise UserError(
                    f"{tokens_path}: sha256 does not match {corpus.directory / MANIFEST}; "
                    "the shard was changed or truncated"
                )
    return read_token_file(tokens_path, vocab_size, dtype)
