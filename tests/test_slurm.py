"""The cluster profile on a real (local, single-node) SLURM: jobs are submitted with sbatch and run.

.ci/run installs Debian's SLURM packages so that this runs in CI; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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


def snakemake_on_slurm(workdir: Path, target: str, *overlays: Path) -> subprocess.CompletedProcess:
    """``target`` of the tiny grid (and config ``overlays``) through the real cluster profile."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        target,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--slurm-no-account",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--configfile",
        str(REPO / "config" / "tiny.yaml"),
        *map(str, overlays),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_profile_runs_training_and_evaluation_through_sbatch(cluster, tmp_path):
    target = "results/eval/dense/xs/d1_16K/eval.json"
    res = snakemake_on_slurm(tmp_path, target)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert json.loads((tmp_path / target).read_text())["val_loss"] > 0
    logs = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "logs" / "slurm").rglob("*.log"))
    rules = {p.split("/")[2] for p in logs}
    assert {"rule_data", "rule_dense", "rule_evaluate"} <= rules, logs
    job_id = next((tmp_path / "logs" / "slurm" / "rule_dense").rglob("*.log")).stem
    job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Partition=gpu" in job and "gpu:1" in job, job  # the profile's GPU request reached SLURM


def test_a_two_task_training_job_runs_as_two_srun_ranks(cluster, tmp_path):
    """cluster.dense.tasks 2: one SLURM job of 2 tasks (and the default GPU per task), whose ranks train on CPU
    with gloo; the run directory holds what a one-process job writes, from rank 0."""
    overlay = tmp_path / "two_tasks.yaml"
    overlay.write_text("cluster:\n  dense: {tasks: 2}\n")
    run = tmp_path / "results" / "dense" / "xs" / "d1_16K"
    res = snakemake_on_slurm(tmp_path, f"{run.relative_to(tmp_path)}/metrics.csv", overlay)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    files = ["config.json", "metrics.csv", "model.safetensors", "provenance.json"]
    assert sorted(p.name for p in run.iterdir()) == files
    record = json.loads((run / "provenance.json").read_text())
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert metrics[-1].startswith(f"{record['steps']},") and record["tokens_per_step"] == 8 * 64
    log = (tmp_path / "logs" / "dense" / "xs" / "d1_16K.log").read_text()
    # printed by rank 0 once the process group formed, which takes both ranks
    assert "dense/xs/d1_16K: 2 processes (srun) x 1 pass of 4 sequences per step" in log, log[-2000:]
    assert log.count("tokens/s") == 1  # rank 0 alone reports
    job_id = next((tmp_path / "logs" / "slurm" / "rule_dense").rglob("*.log")).stem
    job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "NumTasks=2" in job and "TresPerNode=gres:gpu:2" in job, job


def test_site_settings_reach_sbatch_on_top_of_each_jobs_own_numbers(cluster, tmp_path):
    """config `site`: the GPU jobs go to the h100 partition with the h100 GPU model and the nvlink feature, their
    time limit cut to the partition's 10 hours; each job keeps its own CPUs and memory (before, a site setting given
    as --default-resources replaced the profile's), and the jobs without GPUs stay on the cpu partition."""
    overlay = tmp_path / "site.yaml"
    overlay.write_text(
        "site:\n  gpu_partition: h100\n  gpu_type: h100\n  gpu_constraint: nvlink\n  max_runtime: 600\n"
        "  gpu_extra: '--exclusive'\n"
    )
    target = "results/dense/xs/d1_16K/metrics.csv"
    res = snakemake_on_slurm(tmp_path, target, overlay)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    def job(rule: str) -> str:
        job_id = next((tmp_path / "logs" / "slurm" / f"rule_{rule}").rglob("*.log")).stem
        return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout

    def memory_mb(job: str) -> float:
        """MinMemoryNode in MB (scontrol writes 64000M or 62.50G depending on the value and version)."""
        value, unit = re.search(r"MinMemoryNode=([\d.]+)([MGT])", job).groups()
        return float(value) * {"M": 1, "G": 1024, "T": 1024 * 1024}[unit]

    dense = job("dense")
    for field in ("Partition=h100", "Features=nvlink", "gpu:h100:1", "TimeLimit=10:00:00", "CPUs/Task=8"):
        assert field in dense, dense
    assert memory_mb(dense) == 64000 and "OverSubscribe=NO" in dense, dense  # --exclusive
    data = job("data")
    assert "Partition=cpu" in data and "TimeLimit=02:00:00" in data and memory_mb(data) == 32000, data


def test_a_run_longer_than_the_walltime_runs_as_chained_sbatch_jobs_with_the_bytes_of_one_job(cluster, tmp_path):
    """site.max_runtime 5 minutes at a measured 30 tokens/s: a job holds floor(0.85 * 300 * 30 / 512) = 14 steps,
    so the 31-step dense run trains as two part jobs and its own job, each submitted with the 5-minute limit; the
    run directory equals the run trained in one local job, byte for byte."""
    overlay = tmp_path / "walltime.yaml"
    overlay.write_text("site: {max_runtime: 5, tokens_per_second: 30}\n")
    target = "results/dense/xs/d1_16K/metrics.csv"
    res = snakemake_on_slurm(tmp_path / "split", target, overlay)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    logs = tmp_path / "split" / "logs" / "slurm"
    part_jobs = sorted(p.stem for p in (logs / "rule_dense_part").rglob("*.log"))
    assert len(part_jobs) == 2 and len(list((logs / "rule_dense").rglob("*.log"))) == 1
    for job_id in part_jobs:
        job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        assert "TimeLimit=00:05:00" in job and "Partition=gpu" in job, job
    whole = tmp_path / "whole"
    local = subprocess.run(
        [sys.executable, "-m", "snakemake", target, "--snakefile", str(REPO / "Snakefile"), "--directory", str(whole),
         "--cores", "2", "--configfile", str(REPO / "config" / "tiny.yaml")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    run = Path("results/dense/xs/d1_16K")
    for name in ("config.json", "metrics.csv", "model.safetensors", "provenance.json"):
        assert (whole / run / name).read_bytes() == (tmp_path / "split" / run / name).read_bytes(), name
