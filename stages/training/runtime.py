"""Process set-up shared by the torch stages: threads, determinism, device, precision."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

import torch

from stages.core.cli import UserError


def configure(threads: int) -> None:
    """Fix the thread count and make every kernel deterministic (same inputs -> same bytes)."""
    if threads < 1:
        raise UserError(f"--threads: must be >= 1, got {threads}")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    # torch.use_deterministic_algorithms() also imports the inductor compiler (~2 s per process, more than a
    # tiny training job); nothing here is compiled, so set the same flag on the C side when it is there.
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is not None:
        setter(True)
    else:
        torch.use_deterministic_algorithms(True)
    # Deterministic mode also NaN-fills every fresh allocation (~10% of a CPU training step here); our kernels
    # write every element they allocate, so that guard only costs time. The determinism tests cover this.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    keep_freed_memory()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc malloc keep the memory a training step frees for the next step (no effect on results).

    Why: by default glibc serves large tensors (the [tokens, vocab] logits, activations) with fresh mmap pages or
    returns the heap top to the kernel after each step, so every step page-faults its working set in again:
    ~1,400 minor faults per step at the default grid shape (s, 512 tokens), 1-3 ms of kernel time on a ~20 ms
    step (bench/train_throughput.py). With a 32 MiB mmap threshold and a 1 GiB trim threshold the step reuses its
    own freed memory (0 faults). The process keeps its peak heap. Returns whether the allocator took the settings
    (False off glibc, e.g. macOS: nothing changes).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


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
