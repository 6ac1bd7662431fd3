"""Launching a nanotron job (one node or a SLURM allocation) in the nanotron environment.

nanotron pins numpy < 2, so it lives in an environment of its own: ``make nanotron-env`` builds it in
``.nanotron/venv`` with the pinned checkout (``$NANOTRON_HOME`` when set, else the source archive unpacked to
``.nanotron/nanotron``). ``NANOTRON_PYTHON`` names another environment's python (a cluster's), ``NANOTRON_HOME``
another checkout (``run_train.py``, whose data loader the entry point uses, sits at its root and is not
installed by pip). The checkout's commit is read with git, else from the ``.commit`` file that
``make nanotron-env`` writes beside an unpacked archive; a checkout at another commit than
:data:`stages.interop.nanotron_config.NANOTRON_COMMIT` is warned about, not refused (a user may carry a fix).

One node: ``python -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node G -m
stages.interop.nanotron_entry --config-file X --job J``. Several nodes (``SLURM_JOB_NUM_NODES`` > 1): ``srun``
starts one launcher per node, which meet at a c10d rendezvous on the first node of the allocation. ``G`` is
``NANOTRON_NPROC_PER_NODE``, else ``SLURM_GPUS_ON_NODE``, else the number of ``CUDA_VISIBLE_DEVICES``, else 1.
The repository goes first on ``PYTHONPATH`` (the entry point and our model code), and
``CUDA_DEVICE_MAX_CONNECTIONS=1`` is set, as nanotron asks.

nanotron also logs one line per step on its first rank, ``iteration: 12 / 100 | ... | lm_loss: 3.21 | lr: ...``,
every number in its ``human_format`` (3 significant digits, K/M/B/T suffixes); :func:`parse_log` reads them
(for a quick look at a log; ``metrics.csv`` comes from the trainer's full-precision metrics file).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.core.cli import UserError
from stages.core.machine import git_head
from stages.interop.nanotron_config import NANOTRON_COMMIT

HOME_VAR = "NANOTRON_HOME"
PYTHON_VAR = "NANOTRON_PYTHON"
RUN_TRAIN = "run_train.py"
COMMIT_FILE = ".commit"  # written by `make nanotron-env` beside a checkout unpacked from a source archive
ENTRY = "stages.interop.nanotron_entry"
RDZV_PORT = 29500
REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / ".nanotron"  # what `make nanotron-env` builds: venv/ and, from the archive, nanotron/
INSTALL_HINT = (
    f"run `make nanotron-env` (it installs $NANOTRON_HOME or the pinned source archive, commit {NANOTRON_COMMIT[:8]}, "
    "into .nanotron/venv), or set NANOTRON_HOME and NANOTRON_PYTHON (docs/cluster.md)"
)


def nanotron_home(env: Mapping[str, str]) -> Path:
    """The nanotron checkout: ``NANOTRON_HOME``, else the one ``make nanotron-env`` unpacked; or a one-line error."""
    home = Path(env[HOME_VAR]) if env.get(HOME_VAR) else LOCAL / "nanotron"
    if not (home / RUN_TRAIN).is_file():
        where = f"{HOME_VAR}={home}" if env.get(HOME_VAR) else f"{home} ({HOME_VAR} is not set)"
        raise UserError(f"{where}: no {RUN_TRAIN} there (not a nanotron source checkout); {INSTALL_HINT}")
    return home


def nanotron_python(env: Mapping[str, str]) -> Path:
    """The python of the nanotron environment: ``NANOTRON_PYTHON``, else ``.nanotron/venv``; or a one-line error."""
    python = Path(env[PYTHON_VAR]) if env.get(PYTHON_VAR) else LOCAL / "venv" / "bin" / "python"
    if not python.is_file():
        where = f"{PYTHON_VAR}={python}" if env.get(PYTHON_VAR) else f"{python} ({PYTHON_VAR} is not set)"
        raise UserError(f"{where}: no python there; {INSTALL_HINT}")
    return python


def check_one_launcher(env: Mapping[str, str]) -> None:
    """Refuse to run as one of several processes: nanotron starts its own (one launcher per job)."""
    for key in ("WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        if (_positive(env, key) or 1) > 1:
            raise UserError(
                f"{key}={env[key]}: the nanotron backend runs one process per job and nanotron starts the GPU "
                "processes itself; give the training rule one task (cluster.<rule>.tasks: 1) and its GPUs"
            )


def checkout_commit(home: Path) -> str:
    """The commit of the checkout at ``home``: git's, else the unpacked archive's ``.commit``, else 'unknown'."""
    if (home / ".git").exists() and (head := git_head(home)):
        return head
    recorded = home / COMMIT_FILE
    if recorded.is_file():
        return recorded.read_text(encoding="utf-8").strip() or "unknown"
    return "unknown"


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


def launch_command(python: Path, config: Path, job: Path, world: World) -> list[str]:
    """The command line that trains ``config`` (with our ``job`` file) through our entry point on ``world``."""
    tail = ["-m", ENTRY, "--config-file", str(config), "--job", str(job)]
    run = [str(python), "-m", "torch.distributed.run"]
    if world.nnodes == 1:
        return [*run, "--standalone", "--nnodes", "1", "--nproc_per_node", str(world.nproc_per_node), *tail]
    torchrun = [
        *run,
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


def launch_env(env: Mapping[str, str], home: Path, python: Path) -> dict[str, str]:
    """The environment of the launch: ours with the nanotron environment activated (its ``bin`` first on PATH:
    nanotron builds its C++ data helper with the ``python3`` it finds there), the repository first on
    PYTHONPATH, the checkout, and what nanotron asks for (asserted under tensor parallelism)."""
    bin_path = os.pathsep.join(p for p in (str(python.parent), env.get("PATH", "")) if p)
    python_path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return {
        **env,
        "PATH": bin_path,
        "PYTHONPATH": python_path,
        HOME_VAR: str(home),
        "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    }


def run_logged(command: Sequence[str], env: Mapping[str, str], log: Path, run_id: str) -> None:
    """Run ``command``, copying its output to ``log`` (appended: a resumed job keeps the earlier attempt's
    lines) and to our stderr; a failure is one line naming the log."""
    if shutil.which(command[0], path=env.get("PATH")) is None:
        raise UserError(f"{command[0]}: not found (needed to launch nanotron)")
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
