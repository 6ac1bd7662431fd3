"""A real single-node SLURM cluster for the cluster-profile test (Debian's slurmctld, slurmd, munge).

Runs as root on a throwaway machine (CI installs the packages in .ci/run). Two fake GPUs (device files) of
model ``h100`` let the real GPU requests schedule, typed or not; the node has the feature ``nvlink`` and sits in
three partitions, ``cpu`` (the default), ``gpu`` and ``h100`` (10 hours at most), so that a test can point the
config's ``site`` settings at them. ``SlurmdParameters=config_overrides`` lets the node advertise the CPUs and
memory the jobs ask for on a small machine. The jobstep plugin strips
``SLURM_CONF``, so the configuration goes to the compiled-in default, ``/etc/slurm/slurm.conf``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue")
ETC = Path("/etc/slurm")
MARKER = "# written by tests/slurm_cluster.py"


def available() -> str | None:
    """Why a local cluster cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (slurmd, device files, /etc/slurm)"
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"SLURM binaries missing: {', '.join(missing)} (apt-get install slurmctld slurmd slurm-client munge)"
    conf = ETC / "slurm.conf"
    if conf.exists() and MARKER not in conf.read_text():
        return f"{conf} belongs to another SLURM installation"
    return None


class LocalSlurm:
    """Start munge, slurmctld and slurmd under ``root``; ``stop()`` kills them and removes the config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.pids: list[Path] = []

    def start(self) -> None:
        r = self.root
        for sub in ("munge", "state", "spool", "log", "dev"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        (r / "munge").chmod(0o755)
        socket_path = r / "munge" / "munge.socket"
        subprocess.run(
            [
                "munged",
                "--force",
                "-S",
                str(socket_path),
                f"--key-file={key}",
                f"--log-file={r / 'log' / 'munged.log'}",
                f"--pid-file={r / 'munge' / 'munged.pid'}",
                f"--seed-file={r / 'munge' / 'munged.seed'}",
            ],
            check=True,
        )
        self.pids.append(r / "munge" / "munged.pid")
        for i in range(2):
            dev = r / "dev" / f"fakegpu{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
        ETC.mkdir(parents=True, exist_ok=True)
        (ETC / "slurm.conf").write_text(self._slurm_conf(socket_path))
        (ETC / "gres.conf").write_text(
            f"{MARKER}\nAutoDetect=off\nNodeName={self.host} Name=gpu Type=h100 File={r / 'dev'}/fakegpu[0-1]\n"
        )
        subprocess.run(["slurmctld"], check=True)
        subprocess.run(["slurmd"], check=True)
        self.pids += [r / "slurmctld.pid", r / "slurmd.pid"]
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.split()
            if out and all(state.startswith("idle") for state in out):
                return
            time.sleep(1)
        raise RuntimeError(f"local SLURM node did not become idle: {out}; see {r / 'log'}")

    def _slurm_conf(self, munge_socket: Path) -> str:
        r = self.root
        return f"""{MARKER}
ClusterName=local
SlurmctldHost={self.host}(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "log" / "slurmctld.log"}
SlurmdLogFile={r / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
GresTypes=gpu
NodeName={self.host} NodeAddr=127.0.0.1 CPUs=16 RealMemory=512000 Gres=gpu:h100:2 Features=nvlink State=UNKNOWN
PartitionName=cpu Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={self.host} MaxTime=INFINITE State=UP
PartitionName=h100 Nodes={self.host} MaxTime=10:00:00 State=UP
"""

    def stop(self) -> None:
        subprocess.run(["scancel", "--user=root"], capture_output=True)
        for pid_file in reversed(self.pids):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), 15)
        time.sleep(1)
        for name in ("slurm.conf", "gres.conf"):
            path = ETC / name
            if path.exists() and MARKER in path.read_text():
                path.unlink()
