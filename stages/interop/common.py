"""What the Hugging Face and nanotron conversions share: staged output directories, required config keys
and writing an imported model as our checkpoint."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from stages.core.artifacts import replace_dir
from stages.core.cli import UserError
from stages.core.codehash import code_hash
from stages.core.record import DataRef, RunRecord, SourceRef
from stages.interop.hf_config import require as require  # one definition, torch-free
from stages.model.checkpoint import save_checkpoint
from stages.model.compute import flops_per_token, param_counts
from stages.model.transformer import Transformer


def make_readable(root: Path) -> None:
    """Directories 0755 and files 0644 under ``root`` (itself included), like any download, whatever the
    umask; ``tempfile.mkdtemp`` creates the staging directory 0700."""
    os.chmod(root, 0o755)
    for parent, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(parent, name), 0o755)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o644)


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temporary sibling directory that replaces ``out`` only once everything in it is written; its
    contents are made readable by others (directories 0755, files 0644) before the rename."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise UserError(f"{out}: cannot write it ({err.strerror})") from None
    try:
        yield tmp
        make_readable(tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_import(
    model: Transformer,
    out: Path,
    fmt: str,
    source: Path,
    shas: dict[str, str],
    *,
    run_id: str | None = None,
    tokens: int | None = None,
    flops_convention: str = "6N",
    tokenizer_sha256: str = "",
) -> None:
    """Write an imported model as our checkpoint; its run record names the source files and their sha256.

    Its pre-training is sunk compute that nobody measured here: ``tokens`` is what the user states (then the
    FLOPs are that many tokens at our ``flops_convention`` per-token cost at the imported context length, an
    estimate), and without it the record says ``tokens_known: false`` so that the runs table leaves D1 and
    the total compute of its descendants empty instead of counting zero. ``tokenizer_sha256`` pins the
    tokenizer that came with the model: a child run on a corpus tokenized otherwise is refused.
    """
    counts = param_counts(model.cfg)
    fpt = flops_per_token(model.cfg, model.cfg.max_seq_len, flops_convention)
    record = RunRecord(
        run_id=run_id or str(out),
        kind="import",
        code_hash=code_hash("export"),
        torch_version=torch.__version__,
        tokens=tokens or 0,
        tokens_known=tokens is not None,
        flops=fpt * tokens if tokens is not None else 0.0,
        flops_per_token=fpt,
        flops_convention=flops_convention,
        N_total=counts.total(),
        N_active=counts.active(),
        data=DataRef(tokenizer_sha256=tokenizer_sha256),
        source=SourceRef(format=fmt, path=str(source), sha256=shas),
    )
    with staged_dir(out) as tmp:
        save_checkpoint(tmp, model, record)
