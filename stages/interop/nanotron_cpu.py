"""nanotron's trainer on a CPU: what the pinned commit hard-codes to CUDA, redirected for one process.

For checking a cluster job on a laptop before it queues and for testing the backend in CI (correctness, not
speed). :func:`enable` must run before nanotron is imported; it

* puts the pure-torch stand-ins of ``flash_attn`` and ``grouped_gemm`` (:mod:`stages.interop.cpu_kernels`)
  first on ``sys.path`` (``triton`` itself imports on a CPU: nanotron only compiles kernels when they run);
* starts the process group with gloo (nanotron's own start raises without CUDA) and makes
  ``ParallelContext.set_device`` a no-op;
* rewrites every ``device="cuda"`` that reaches a torch function or tensor method (model building, the router's
  weight, rotary tables, buffers, gradient clipping: about sixty places at the pinned commit) to the CPU,
  through a torch function mode that stays on for the whole process;
* makes nanotron's CUDA-event timers CPU timers (a CUDA timer falling back to the CPU changes its own type and
  then clashes with the next request for it), the CUDA memory and synchronisation calls no-ops, and the move of
  a resumed optimizer state to ``cuda`` a no-op.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

KERNELS = Path(__file__).with_name("cpu_kernels")
CPU = torch.device("cpu")


def _is_cuda(value: Any) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    if isinstance(value, str):
        return value.split(":")[0] == "cuda"
    return False


class CudaToCpu(TorchFunctionMode):
    """Every CUDA device named in a torch call becomes the CPU; ``Tensor.cuda()`` returns the tensor itself."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = CPU
        if func is torch.Tensor.to:
            args = tuple(CPU if _is_cuda(a) else a for a in args)
        return func(*args, **kwargs)


def _nothing(*args: Any, **kwargs: Any) -> int:
    return 0


def enable(timeout_s: float) -> None:
    """Make this process run nanotron on the CPU (call before importing nanotron); idempotent."""
    if str(KERNELS) not in sys.path:
        sys.path.insert(0, str(KERNELS))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
    for name in (
        "synchronize",
        "empty_cache",
        "memory_allocated",
        "max_memory_allocated",
        "memory_reserved",
        "max_memory_reserved",
        "reset_peak_memory_stats",
    ):
        setattr(torch.cuda, name, _nothing)
    CudaToCpu().__enter__()  # left on: nanotron builds and trains for the rest of the process

    import nanotron.logging.timers as timers
    import nanotron.trainer as trainer
    from nanotron.parallel.context import ParallelContext

    ParallelContext.set_device = lambda self: None
    call = timers.Timers.__call__

    def cpu_timer(self: Any, name: Any = None, timer_type: Any = timers.TimerType.CPU, *args: Any, **kwargs: Any):
        return call(self, name, timers.TimerType.CPU, *args, **kwargs)

    timers.Timers.__call__ = cpu_timer
    trainer.state_dict_to_device = lambda state_dict, device: None
