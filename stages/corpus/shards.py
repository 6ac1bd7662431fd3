"""Token shards and the deterministic order in which runs read them.

A corpus directory holds ``train.bin`` / ``val.bin`` (little-endian token ids, documents joined by the
end-of-text token), ``tokenizer.json`` and ``manifest.json`` with their sha256. Ids are uint16 when the
vocabulary fits (every corpus with a trained tokenizer of up to 65536 ids) and uint32 otherwise (a parent
model's tokenizer, such as Qwen2's 151K ids); the manifest's ``token_dtype`` says which, and every reader
takes it from there. Training reads
non-overlapping windows of ``seq_len + 1`` tokens in a permuted order that depends only on the data
seed, so every run sees the same stream: a run that continues a parent (upcycled, dense-continued)
starts where the parent stopped and sees fresh text, and runs that differ only in token budget see
the same prefix (common random numbers make the scaling curves smoother).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.core.artifacts import read_json, sha256_file
from stages.core.cli import UserError

MANIFEST = "manifest.json"
TOKEN_DTYPE = np.dtype("<u2")  # the shards of a vocabulary of up to 65536 ids
TOKEN_DTYPES = {"uint16-le": TOKEN_DTYPE, "uint32-le": np.dtype("<u4")}  # manifest name -> numpy dtype


def token_dtype(vocab_size: int) -> str:
    """The manifest name of the narrowest dtype that holds every id of ``vocab_size`` (uint16 when it fits)."""
    return "uint16-le" if vocab_size <= 1 << 16 else "uint32-le"


def dtype_of(name: str, where: str | Path) -> np.dtype:
    """The numpy dtype of a manifest's ``token_dtype``, or a one-line error naming the manifest."""
    if name not in TOKEN_DTYPES:
        raise UserError(f"{where}: token_dtype {name!r} is not one of {', '.join(TOKEN_DTYPES)}")
    return TOKEN_DTYPES[name]


@dataclass(frozen=True)
class Corpus:
    """A verified corpus directory."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    def path(self, split: str) -> Path:
        return self.directory / self.manifest["files"][split]["name"]

    def sha256(self, split: str) -> str:
        return str(self.manifest["files"][split]["sha256"])

    @property
    def dtype(self) -> np.dtype:
        """Token ids of the shards; manifests written before uint32 shards existed hold uint16."""
        return dtype_of(self.manifest.get("token_dtype", "uint16-le"), self.directory / MANIFEST)

    def tokens(self, split: str) -> np.ndarray:
        return read_token_file(self.path(split), self.vocab_size, self.dtype)

    def check_checkpoint(self, vocab_size: int, tokenizer_sha256: str, who: str) -> None:
        """Refuse a checkpoint trained with another tokenizer (the one check train, surgery and eval share)."""
        if vocab_size != self.vocab_size:
            raise UserError(
                f"{who}: vocab_size {vocab_size} does not match {self.directory / MANIFEST} ({self.vocab_size}); "
                "the checkpoint was trained with another tokenizer"
            )
        if tokenizer_sha256 and tokenizer_sha256 != self.sha256("tokenizer"):
            raise UserError(
                f"{who}: its tokenizer sha256 {tokenizer_sha256[:12]}... differs from {self.path('tokenizer')} "
                f"({self.sha256('tokenizer')[:12]}...); data and checkpoint do not match"
            )


def open_corpus(directory: str | Path, verify: tuple[str, ...] = ("train", "val", "tokenizer")) -> Corpus:
    """Read ``manifest.json`` and check the sha256 of the files a stage is about to use."""
    directory = Path(directory)
    manifest = read_json(directory / MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or "vocab_size" not in manifest:
        raise UserError(f"{directory / MANIFEST}: not a corpus manifest (no 'files' / 'vocab_size')")
    for split in verify:
        entry = files.get(split)
        if not isinstance(entry, dict):
            raise UserError(f"{directory / MANIFEST}: no entry for '{split}'")
        path = directory / entry["name"]
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise UserError(
                f"{path}: sha256 {actual[:12]}... does not match {directory / MANIFEST} "
                f"({entry['sha256'][:12]}...); the file was changed or truncated - rerun the data stage"
            )
    return Corpus(directory, manifest)


def read_token_file(path: str | Path, vocab_size: int, dtype: np.dtype = TOKEN_DTYPE) -> np.ndarray:
    """Memory-map a shard of ``dtype`` ids, rejecting truncated files and ids outside the vocabulary."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    size = path.stat().st_size
    if size == 0 or size % dtype.itemsize:
        raise UserError(
            f"{path}: truncated token shard ({size} bytes; expected a positive multiple of {dtype.itemsize})"
        )
    tokens = np.memmap(path, dtype=dtype, mode="r")
    top = int(tokens.max())
    if top >= vocab_size:
        raise UserError(f"{path}: token id {top} is outside the vocabulary of size {vocab_size} (tokenizer mismatch)")
    return tokens


class TrainStream:
    """Windows of ``seq_len + 1`` tokens in a seeded permutation, reshuffled every epoch."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int) -> None:
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise UserError(f"training shard has {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}")
        self._epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._perm, self._epoch = rng.permutation(self.n_windows), epoch
        return self._perm

    def epochs_for(self, n_sequences: int) -> float:
        return n_sequences / self.n_windows

    def batch(self, position: int, batch_size: int) -> torch.Tensor:
        """Sequences ``position .. position + batch_size - 1`` of the stream, shape (B, seq_len + 1)."""
        rows = []
        for p in range(position, position + batch_size):
            window = int(self._permutation(p // self.n_windows)[p % self.n_windows])
            start = window * self.seq_len
            rows.append(np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64))
        return torch.from_numpy(np.stack(rows))


def eval_windows(tokens: np.ndarray, seq_len: int, max_tokens: int) -> torch.Tensor:
    """The fixed evaluation set: the first ``max_tokens`` predicted tokens of a shard, in windows."""
    n_windows = min(max_tokens // seq_len, (len(tokens) - 1) // seq_len)
    if n_windows < 1:
        raise UserError(f"validation shard has {len(tokens)} tokens, fewer than one window of {seq_len + 1}")
    rows = [np.asarray(tokens[i * seq_len : i * seq_len + seq_len + 1], dtype=np.int64) for i in range(n_windows)]
    return torch.from_numpy(np.stack(rows))
