"""The cluster profile on a real (local, single-node) SLURM: jobs are submitted with sbatch and run.

.ci/run installs Debian's SLURM packages so that this runs in CI; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO
from slurm_cluster import LocalSlurm, available

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = available()
    if reason:
        pytest.skip(reason)
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()


def test_profile_runs_training_and_evaluation_through_sbatch(cluster, tmp_path):
    target = "results/eval/dense/xs/d1_16K/eval.json"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--configfile",
        str(REPO / "config" / "tiny.yaml"),
        "--slurm-no-account",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        target,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert json.loads((tmp_path / target).read_text())["val_loss"] > 0
    logs = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "logs" / "slurm").rglob("*.log"))
    rules = {p.split("/")[2] for p in logs}
    assert {"rule_data", "rule_dense", "rule_evaluate"} <= rules, logs
    job_id = next((tmp_path / "logs" / "slurm" / "rule_dense").rglob("*.log")).stem
    job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Partition=gpu" in job and "gpu:1" in job, job  # the profile's GPU request reached SLURM
