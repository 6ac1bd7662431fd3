"""Launching nanotron's ``run_train.py`` (one node or a SLURM allocation) and reading its training log.

``run_train.py`` sits at the root of a nanotron source checkout and is not installed by pip, so the checkout
is named by ``NANOTRON_HOME``; its commit is read with git and recorded (a checkout at another commit than
:data:`stages.interop.nanotron_config.NANOTRON_COMMIT` is warned about, not refused: a user may carry a fix).

One node: ``torchrun --standalone --nnodes 1 --nproc_per_node G run_train.py --config-file X``. Several nodes
(``SLURM_JOB_NUM_NODES`` > 1): ``srun`` starts one torchrun per node, which meet at a c10d rendezvous on the
first node of the allocation. ``G`` is ``NANOTRON_NPROC_PER_NODE``, else ``SLURM_GPUS_ON_NODE``, else the
number of ``CUDA_VISIBLE_DEVICES``, else 1. ``CUDA_DEVICE_MAX_CONNECTIONS=1`` is set, as nanotron asks.

nanotron logs one line per step (``logging.iteration_step_info_interval: 1``) on its first rank,
``iteration: 12 / 100 | consumed_tokens: 786K | ... | grad_norm: 0.512 | lm_loss: 3.21 | lr: 0.000599 | ...``,
every number in its ``human_format`` (3 significant digits, K/M/B/T suffixes); :func:`parse_log` reads them.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.core.cli import UserError
from stages.interop.nanotron_config import NANOTRON_COMMIT

HOME_VAR = "NANOTRON_HOME"
RUN_TRAIN = "run_train.py"
RDZV_PORT = 29500
INSTALL_HINT = (
    f"git clone <huggingface/nanotron> $NANOTRON_HOME && git -C $NANOTRON_HOME checkout {NANOTRON_COMMIT} && "
    "pip install -e $NANOTRON_HOME (README: Cluster)"
)


def nanotron_home(env: Mapping[str, str]) -> Path:
    """The nanotron checkout of ``NANOTRON_HOME``, or a one-line error saying how to get one."""
    home = env.get(HOME_VAR, "")
    if not home:
        raise UserError(f"train.backend nanotron: {HOME_VAR} is not set; {INSTALL_HINT}")
    if not (Path(home) / RUN_TRAIN).is_file():
        raise UserError(f"{HOME_VAR}={home}: no {RUN_TRAIN} there (not a nanotron source checkout); {INSTALL_HINT}")
    return Path(home)


def check_one_launcher(env: Mapping[str, str]) -> None:
    """Refuse to run as one of several processes: nanotron starts its own (one launcher per job)."""
    for key in ("WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        if (_positive(env, key) or 1) > 1:
            raise UserError(
                f"{key}={env[key]}: the nanotron backend runs one process per job and nanotron starts the GPU "
                "processes itself; give the training rule one task (cluster.<rule>.tasks: 1) and its GPUs"
            )


def checkout_commit(home: Path) -> str:
    """The git commit of the checkout at ``home`` ('unknown' when git cannot tell)."""
    try:
        out = subprocess.run(["git", "-C", str(home), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


@dataclass(frozen=True)
class World:
    """Where the processes of one nanotron job run."""

    nproc_per_node: int
    nnodes: int = 1
    master_addr: str = ""
    port: int = RDZV_PORT
    job_id: str = ""

    @property
    def size(self) -> int:
        return self.nproc_per_node * self.nnodes


def _positive(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key, "").split("(")[0].strip()  # SLURM writes counts such as "4(x2)"
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"{key}={env[key]!r}: expected a positive integer") from None
    if n < 1:
        raise UserError(f"{key}={env[key]!r}: expected a positive integer")
    return n


def world_from_env(env: Mapping[str, str]) -> World:
    """GPUs per node and nodes of this job from NANOTRON_NPROC_PER_NODE / SLURM / CUDA_VISIBLE_DEVICES."""
    gpus = _positive(env, "NANOTRON_NPROC_PER_NODE") or _positive(env, "SLURM_GPUS_ON_NODE")
    if gpus is None:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        gpus = len(visible) or 1
    nodes = _positive(env, "SLURM_JOB_NUM_NODES") or _positive(env, "SLURM_NNODES") or 1
    if nodes == 1:
        return World(gpus)
    master = env.get("NANOTRON_MASTER_ADDR") or _first_host(env.get("SLURM_JOB_NODELIST", ""))
    port = _positive(env, "NANOTRON_MASTER_PORT") or RDZV_PORT
    return World(gpus, nodes, master, port, env.get("SLURM_JOB_ID", "nanotron"))


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``scontrol show hostnames``, else the list read by hand
    (``gpu[01-04,07],cpu1`` -> ``gpu01``)."""
    if not nodelist:
        raise UserError("SLURM_JOB_NODELIST is not set: cannot find the rendezvous node of a multi-node job")
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
        if out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError):
        pass
    match = re.match(r"([^,\[]+)(?:\[([^],-]+))?", nodelist)
    assert match is not None
    return match[1] + (match[2] or "")


def launch_command(home: Path, config: Path, world: World) -> list[str]:
    """The command line that trains ``config`` with the nanotron checkout at ``home`` on ``world``."""
    script = str(home / RUN_TRAIN)
    tail = [script, "--config-file", str(config)]
    if world.nnodes == 1:
        return ["torchrun", "--standalone", "--nnodes", "1", "--nproc_per_node", str(world.nproc_per_node), *tail]
    torchrun = [
        "torchrun",
        "--nnodes",
        str(world.nnodes),
        "--nproc_per_node",
        str(world.nproc_per_node),
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"{world.master_addr}:{world.port}",
        "--rdzv_id",
        world.job_id,
        "--max_restarts",
        "0",
        *tail,
    ]
    srun = ["srun", "--nodes", str(world.nnodes), "--ntasks", str(world.nnodes), "--ntasks-per-node", "1"]
    return [*srun, *torchrun]


def launch_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of the launch: ours plus what nanotron asks for (asserted under tensor parallelism)."""
    return {**env, "CUDA_DEVICE_MAX_CONNECTIONS": "1"}


def run_logged(command: Sequence[str], env: Mapping[str, str], log: Path, run_id: str) -> None:
    """Run ``command``, copying its output to ``log`` (appended: a resumed job keeps the earlier attempt's
    lines) and to our stderr; a failure is one line naming the log."""
    if shutil.which(command[0], path=env.get("PATH")) is None:
        raise UserError(f"{command[0]}: not found on PATH (needed to launch nanotron)")
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{run_id}: {shlex.join(command)}", file=sys.stderr)
    last = ""
    with open(log, "a", encoding="utf-8") as out:
        proc = subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            sys.stderr.write(line)
            if line.strip():
                last = line.strip()
        code = proc.wait()
    if code != 0:
        raise UserError(f"{run_id}: nanotron exited with status {code}; log {log} (last line: {last[-200:]})")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ITERATION = re.compile(r"iteration: (\d+) / (\d+) \|(.*)$")
_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def human_number(text: str) -> float:
    """A number in nanotron's ``human_format``: ``3.21``, ``0.000599``, ``1.2e-05``, ``786K``, ``1.05M``."""
    text = text.strip()
    if text and text[-1] in _SUFFIX:
        return float(text[:-1]) * _SUFFIX[text[-1]]
    return float(text)


def parse_log(lines: Sequence[str] | str) -> dict[int, dict[str, float]]:
    """Iteration -> the numbers logged for it (lm_loss, lr, grad_norm, consumed_tokens, ...); the last line of
    an iteration wins (a resumed job logs the steps after its checkpoint again)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    out: dict[int, dict[str, float]] = {}
    for raw in lines:
        match = _ITERATION.search(_ANSI.sub("", raw))
        if not match:
            continue
        values: dict[str, float] = {}
        for item in match[3].split("|"):
            key, sep, value = item.partition(":")
            if not sep:
                continue
            try:
                values[key.strip()] = human_number(value)
            except ValueError:
                continue  # eta (h:mm:ss) and other non-numbers
        out[int(match[1])] = values
    return out
