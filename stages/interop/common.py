"""What the Hugging Face and nanotron conversions share: staged output directories, required config keys
and writing an imported model as our checkpoint."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from stages.core.artifacts import replace_dir
from stages.core.cli import UserError
from stages.core.codehash import code_hash
from stages.core.record import RunRecord, SourceRef
from stages.model.checkpoint import save_checkpoint
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        make_readable(tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def require(config: dict[str, Any], key: str, where: Path) -> Any:
    """``config[key]``, or a one-line error naming the file that lacks it."""
    if key not in config:
        raise UserError(f"{where}: missing key {key!r}")
    return config[key]


def save_import(model: Transformer, out: Path, fmt: str, source: Path, shas: dict[str, str]) -> None:
    """Write an imported model as our checkpoint; its run record names the source files and their sha256."""
    record = RunRecord(
        run_id=str(out),
        kind="import",
        code_hash=code_hash("export"),
        torch_version=torch.__version__,
        source=SourceRef(format=fmt, path=str(source), sha256=shas),
    )
    with staged_dir(out) as tmp:
        save_checkpoint(tmp, model, record)
