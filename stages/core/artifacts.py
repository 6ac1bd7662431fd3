"""File outputs that are atomic, hashed and byte-deterministic.

Snakemake treats any existing output as complete, so a killed job must never leave a complete-looking
file: everything is written to a temporary sibling and renamed into place. JSON is written with sorted
keys so that identical content gives identical bytes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.core.cli import UserError


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    A write the system refuses (a full disk, no permission, a read-only file system, a quota) is a one-line
    :class:`UserError` naming ``path`` and the system's reason, also where a library (safetensors, torch.save)
    reports it in words of its own."""
    target = Path(path)
    tmp_path: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target)
    except Exception as err:
        reason = _system_reason(err, target.parent)
        if reason is None:
            raise
        other = getattr(err, "filename", None)
        if other and Path(other) not in (tmp_path, target, target.parent):  # another file the block touched
            raise UserError(f"{other}: {reason} (while writing {target})") from None
        raise UserError(f"{target}: cannot write it ({reason})") from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _system_reason(err: Exception, directory: Path) -> str | None:
    """Why the system refused a write, if it did: an OSError's own words, safetensors' ``(os error N)``, or for
    an error that hides it (torch.save says only where its archive broke off) a file system with no space left."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.strerror or os.strerror(err.errno)
    code = re.search(r"\(os error (\d+)\)", str(err))
    if code:
        return os.strerror(int(code[1]))
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return os.strerror(errno.ENOSPC) if stat.f_bavail == 0 else None


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _clean(obj: Any) -> Any:
    """Make floats JSON-safe: non-finite values become null (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _clean(obj.item())
    return obj


def dumps_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, two-space indent, trailing newline."""
    return json.dumps(_clean(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON, turning a missing or malformed file into a one-line user error."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid JSON (not UTF-8 text)") from None


def replace_dir(tmp_dir: Path, target: Path) -> None:
    """Move a fully written temporary directory onto ``target`` (removing an older one)."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp_dir, target)
