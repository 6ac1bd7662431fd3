"""Where a checkpoint was made: the code's git commit, the CPU, the kernel path torch took and the GPU.

The same grid moves its headline numbers from one machine to the next (the AVX-512 and AVX2 kernel paths give
different sums), so a run record says which machine and which commit made it. Probed once per process; every
probe degrades to "" (a checkout without git, a CPU that does not name itself) instead of failing a run.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Machine:
    """The machine and code behind a run (``commit`` ends in ``+dirty`` when tracked files were edited)."""

    commit: str = ""
    cpu: str = ""
    kernels: str = ""  # torch's CPU kernel path: AVX512, AVX2, DEFAULT, ...
    gpu: str = ""  # the accelerator the run trained on, "" on CPU

    def describe(self) -> str:
        """One line for tables: CPU, kernel path and GPU."""
        parts = [self.cpu or "CPU not named", f"{self.kernels or '?'} kernels"]
        return ", ".join(parts + ([self.gpu] if self.gpu else []))


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def git_head(repo: Path) -> str:
    """``git rev-parse HEAD`` of the checkout at ``repo``; "" outside a git checkout or without git."""
    try:
        return _git(repo, "rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def code_commit() -> str:
    """This code's commit (12 digits), ``+dirty`` with edits to tracked files; "" outside a git checkout."""
    try:
        head = _git(CHECKOUT, "rev-parse", "--short=12", "HEAD")
        edited = _git(CHECKOUT, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if edited else "")


@functools.cache
def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe(gpu: str = "") -> Machine:
    """This process's machine (torch imported lazily: the record module stays torch-free)."""
    import torch

    return Machine(commit=code_commit(), cpu=cpu_name(), kernels=torch.backends.cpu.get_cpu_capability(), gpu=gpu)
