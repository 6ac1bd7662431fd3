"""Data parallelism and gradient accumulation: one optimizer step's global batch split over processes and passes.

A run started by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) or as the
tasks of one ``srun`` step (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``; the rendezvous is the
step's first host at a port derived from the job and step ids) trains data-parallel: every process builds the same
model from the same seed and reads the same deterministic data stream, process r takes the r-th contiguous share of
the ``batch_size`` sequences of a step, and the gradients are summed over processes before the optimizer step. Only
rank 0 writes files. A process that is neither is world size 1 and never touches ``torch.distributed``.

Each process may split its share into passes of ``micro_batch_size`` sequences (gradient accumulation). A pass's
loss is weighted by 1 / (processes x passes), so the summed gradient is that of the mean loss over the global batch.
MoE balancing and z losses are computed per pass (Megatron's convention: a pass is what one router sees at once);
so 2 processes x 4 sequences equal 1 process x 2 passes of 4 sequences, not 1 process x 1 pass of 8, for an MoE
with those losses on. With power-of-two weights even the bits agree: scaling by 2^-k commutes with rounding.

``micro_batch_size`` is a training option (in ``--train``, so a Snakemake param and part of the run record): it
changes what an MoE run optimizes, and for any model the order of float sums and so the bytes of the weights,
which the project promises to reproduce from the options. The process count is placement, like threads: it
leaves the objective alone once ``micro_batch_size`` fixes the pass (with 0, a pass is a process's share, and
an MoE run's balancing loss then follows the process count) and moves results by float rounding only.

Why one flat all-reduce after the last pass and not ``DistributedDataParallel``: DDP overlaps communication with
the backward pass, which only pays at scales this trainer does not target (the nanotron backend serves those), and
in exchange needs ``find_unused_parameters`` for experts a rank routed no token to (an extra graph walk every
step), ``no_sync`` around accumulation passes, and a wrapper that renames every parameter. Summing every gradient
and the step's loss totals in one collective is one code path for all of this; a parameter that got no gradient on
a rank counts as zeros there, and one with no gradient anywhere keeps none, exactly as in one process.

No run waits forever for a lost process: the rendezvous and every collective give up after ``dist_timeout``
seconds (``--dist-timeout``, the config's ``train.dist_timeout``; torch's own defaults are 30 minutes for gloo and
10 for NCCL), and a rank that died (its connections close at once) or stalled (nothing arrives in that time) ends
the others with one line that names it, exit status 2, instead of a backend traceback. The timeout must exceed the
longest pause of rank 0 alone: a periodic validation or a progress checkpoint, while the others wait at the next
all-reduce. Which rank: in a world of two, the other one; in a larger world each rank that gives up says so in the
rendezvous store and waits a few seconds for the others: the ranks that never do are the lost ones (a rank stopped
inside a collective can leave the survivors one all-reduce apart, so counting all-reduces cannot tell). A store
whose host is lost (rank 0 under srun) names rank 0.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stages.core.cli import UserError
from stages.training.options import DIST_TIMEOUT

SLURM_PORT_BASE, SLURM_PORT_SPAN = 20000, 20000  # srun rendezvous ports: [20000, 40000)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # rank among the processes of this host (its CUDA device)
    init_method: str = ""  # torch.distributed rendezvous: env:// (torchrun) or tcp://host:port (srun)
    launcher: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run's files and logs."""
        return self.rank == 0


def _int(env: Mapping[str, str], key: str, default: str | None = None) -> int:
    try:
        return int(env[key] if default is None else env.get(key, default))
    except (KeyError, ValueError):
        raise UserError(f"environment variable {key}: expected an integer, got {env.get(key)!r}") from None


def world_from_env(env: Mapping[str, str] = os.environ) -> World:
    """The world of this process from its launcher's environment: torchrun, an srun step, or neither (one process).

    An srun task is recognised by ``SLURM_STEP_NUM_TASKS``, which only srun sets: a batch script also carries
    ``SLURM_PROCID`` and the job's ``SLURM_NTASKS``, and a training started there directly must not wait for
    ranks nobody launched.
    """
    if "RANK" in env or "WORLD_SIZE" in env:
        size = _int(env, "WORLD_SIZE")
        world = World(_int(env, "RANK"), size, _int(env, "LOCAL_RANK", "0"), "env://", "torchrun")
    elif "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        size = _int(env, "SLURM_STEP_NUM_TASKS")
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        host = env.get("MASTER_ADDR") or first_host(nodes)
        port = env.get("MASTER_PORT") or slurm_port(env.get("SLURM_JOB_ID", "0"), env.get("SLURM_STEP_ID", "0"))
        world = World(_int(env, "SLURM_PROCID"), size, _int(env, "SLURM_LOCALID"), f"tcp://{host}:{port}", "srun")
    else:
        return World()
    if not 0 <= world.rank < world.size:
        raise UserError(f"{world.launcher}: rank {world.rank} is outside a world of {world.size} processes")
    return world


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list, ``gpu[003-010,012]-ib,cpu1`` -> ``gpu003-ib`` (what ``scontrol show
    hostnames`` prints first; parsed here so that a task needs no SLURM client)."""
    entry = re.match(r"(?:[^,\[]|\[[^\]]*\])+", nodelist.strip())
    if entry is None:
        raise UserError(f"SLURM_STEP_NODELIST: cannot read a host from {nodelist!r}")
    return re.sub(r"\[([^\],-]*)[^\]]*\]", r"\1", entry[0])


def slurm_port(job_id: str, step_id: str) -> int:
    """A rendezvous port every task of one srun step derives alike: apart for the steps of one job and for jobs
    with nearby ids (MASTER_PORT, when set, wins)."""
    try:
        return SLURM_PORT_BASE + (int(job_id) * 8 + int(step_id)) % SLURM_PORT_SPAN
    except ValueError:
        raise UserError(f"SLURM_JOB_ID / SLURM_STEP_ID: expected integers, got {job_id!r} / {step_id!r}") from None


def local_device(dev: torch.device, world: World) -> torch.device:
    """The CUDA device of this process: its LOCAL_RANK among the visible devices (modulo their count, so a task
    that SLURM gave a single GPU uses device 0); CPU and single-process runs keep ``dev`` as it is."""
    if dev.type != "cuda" or world.size == 1:
        return dev
    index = world.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@dataclass
class _Group:
    """The process group this process is in: its world, its timeout and the rendezvous store for the marks."""

    world: World
    timeout: int  # seconds
    store: dist.Store
    reductions: int = 0  # all-reduces this process entered


_GROUP: _Group | None = None  # set while a process_group block runs (torch.distributed's state is global too)


@contextlib.contextmanager
def process_group(world: World, dev: torch.device, timeout: int = DIST_TIMEOUT) -> Iterator[None]:
    """Join the run's process group for the duration of the block (gloo on CPU, NCCL on CUDA); no-op alone.

    The rendezvous and every collective give up after ``timeout`` seconds: a process that does not arrive ends
    this one with a one-line :class:`UserError` instead of a wait of torch's default 30 minutes."""
    global _GROUP
    if world.size == 1:
        yield
        return
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl":  # a timed-out NCCL collective raises in the waiting call, not in a watchdog's abort
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
    limit = datetime.timedelta(seconds=timeout)
    try:  # what init_process_group(init_method=...) does, keeping the store for the marks
        store, _, _ = next(dist.rendezvous(world.init_method, world.rank, world.size, timeout=limit))
        store.set_timeout(limit)
        dist.init_process_group(
            backend, store=dist.PrefixStore("default_pg", store), rank=world.rank, world_size=world.size, timeout=limit
        )
    except (RuntimeError, ValueError) as err:  # torch's DistError family: the store or the backend gave up
        raise UserError(
            f"rank {world.rank} of {world.size} ({world.launcher}): rendezvous at {world.init_method} failed: "
            f"{_first_line(err)} (waiting at most {timeout} s: --dist-timeout, train.dist_timeout)"
        ) from None
    _GROUP = _Group(world, timeout, dist.PrefixStore("stages", store))
    try:
        yield
    finally:
        _GROUP = None
        dist.destroy_process_group()


def _first_line(err: BaseException) -> str:
    """The first line of a backend's message, without gloo's source location."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line)


_DIED = ("connection reset", "connection closed", "broken pipe", "end of file", "connection refused")
_STALLED = ("timed out", "timeout")


def _lost_rank(group: _Group, err: RuntimeError) -> UserError:
    """The one-line error for a collective a rank never completed (the error of a lost connection or a timeout),
    naming the rank(s) that failed; a RuntimeError of another kind is a bug and raised as it is."""
    text = str(err).lower()
    died = any(word in text for word in _DIED)
    if not died and not any(word in text for word in _STALLED):
        raise err
    world = group.world
    others = [r for r in range(world.size) if r != world.rank]
    lagging = others if len(others) == 1 else _lagging(group, others)
    if lagging:
        who = f"rank {lagging[0]}" if len(lagging) == 1 else "ranks " + ", ".join(map(str, lagging))
    else:  # every other rank reached this all-reduce: one of them died or stalled inside it
        who = "one of ranks " + ", ".join(map(str, others))
    what = (
        "died (its connection closed)"
        if died
        else f"stalled: nothing arrived within {group.timeout} s (--dist-timeout, train.dist_timeout)"
    )
    return UserError(
        f"rank {world.rank} of {world.size} ({world.launcher}): {who} {what} at all-reduce {group.reductions} "
        f"of this process; rank {world.rank} gives up"
    )


def _lagging(group: _Group, others: list[int]) -> list[int]:
    """The ranks that failed, read from the rendezvous store within a few seconds: this rank says it gave up, then
    waits for the others to say so too (a survivor of a lost rank's collective times out or loses its connection
    as well); those that have not by the deadline are named. A store whose host is lost (rank 0 under srun)
    blocks its reader for good: then rank 0 is the one. Empty when the store cannot tell."""
    limit = min(group.timeout, 5)
    found: list[list[int]] = []

    def read() -> None:
        store = group.store
        try:
            store.set(f"gave_up/{group.world.rank}", "1")
            deadline = time.monotonic() + limit - 1
            while True:
                waiting = [r for r in others if not store.check([f"gave_up/{r}"])]
                if len(waiting) <= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            found.append(waiting)
        except RuntimeError:  # the store's host is gone
            pass

    reader = threading.Thread(target=read, daemon=True)
    with _quiet_stderr():  # the store's C++ client logs a lost host in many lines
        reader.start()
        reader.join(limit + 1)
    if found:
        return found[0]
    return [0] if group.world.launcher == "srun" and group.world.rank != 0 else []


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null for the block (native libraries write there directly)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass(frozen=True)
class BatchPlan:
    """How one step's ``batch_size`` sequences are split: processes x passes x ``micro_batch`` sequences."""

    world: World
    batch_size: int  # the global batch: sequences per optimizer step
    micro_batch: int  # sequences per forward pass

    @property
    def per_rank(self) -> int:
        return self.batch_size // self.world.size

    @property
    def passes(self) -> int:
        """Forward passes of one process per step."""
        return self.per_rank // self.micro_batch

    @property
    def single_pass(self) -> bool:
        """One process, one pass: the plain trainer, with no weighting and no collective."""
        return self.world.size == 1 and self.passes == 1

    @property
    def loss_weight(self) -> float:
        """Weight of one pass's loss: the summed gradient is the gradient of the global batch's mean loss."""
        return 1.0 / (self.world.size * self.passes)

    def offset(self, step_start: int) -> int:
        """This process's first sequence of the step whose global batch starts at ``step_start``."""
        return step_start + self.world.rank * self.per_rank


def plan_batch(world: World, batch_size: int, micro_batch_size: int) -> BatchPlan:
    """The split of ``batch_size``, or a one-line error naming train.batch_size when it does not divide."""
    if batch_size % (world.size * (micro_batch_size or 1)):
        parts = [f"{world.size} processes"] if world.size > 1 else []
        parts += [f"train.micro_batch_size {micro_batch_size}"] if micro_batch_size else []
        raise UserError(f"train.batch_size {batch_size}: must be a multiple of {' x '.join(parts)}")
    return BatchPlan(world, batch_size, micro_batch_size or batch_size // world.size)


def all_reduce_step(params: list[torch.Tensor], totals: torch.Tensor) -> torch.Tensor:
    """Sum the gradients of ``params`` and this process's step ``totals`` over all processes, in one collective.

    The gradients are replaced by their sums, the same bits on every rank (each element is reduced once and the
    result sent to all), so the replicas take the same optimizer steps. Returns the summed totals.
    """
    grads = [p.grad for p in params]
    present = torch.tensor([g is not None for g in grads], dtype=torch.float32, device=totals.device)
    flat = torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1).float() for p, g in zip(params, grads, strict=True)]
        + [present, totals.float()]
    )
    _reduce(flat)
    position = 0
    for p in params:
        n = p.numel()
        p.grad = flat[position : position + n].view_as(p).to(p.dtype)
        position += n
    for p, seen in zip(params, flat[position : position + len(params)].tolist(), strict=True):
        if not seen:
            p.grad = None
    return flat[position + len(params) :]


def _reduce(flat: torch.Tensor) -> None:
    """Sum ``flat`` over all processes in place, or a one-line error naming the rank that died or stalled."""
    group = _GROUP
    if group is None:  # a process group not started by process_group: torch's own errors
        dist.all_reduce(flat)
        return
    group.reductions += 1
    try:
        dist.all_reduce(flat)
    except RuntimeError as err:
        raise _lost_rank(group, err) from None
