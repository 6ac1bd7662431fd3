"""Process set-up shared by the torch stages: threads, determinism, device, precision, seeds."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

import torch

from stages.cli import UserError


def configure(threads: int) -> None:
    """Fix the thread count and make every kernel deterministic (same inputs -> same bytes)."""
    if threads < 1:
        raise UserError(f"--threads: must be >= 1, got {threads}")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"--device: expected cpu, cuda or auto, got {name!r}")
    return torch.device(name)


@contextlib.contextmanager
def precision(dev: torch.device, dtype: str) -> Iterator[None]:
    """fp32, or bf16 autocast (matmuls in bf16, router and losses stay fp32)."""
    if dtype == "fp32":
        yield
    elif dtype == "bf16":
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            yield
    else:
        raise UserError(f"--dtype: expected fp32 or bf16, got {dtype!r}")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from a run's identity (e.g. base seed, kind, model, moe)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
