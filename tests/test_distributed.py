"""Data-parallel training on CPU (gloo, 2 processes) against one process, and how a process finds its world.

Tolerance of the dense comparison: the two runs sum the same numbers in another order (one matmul over 8
sequences, or two over 4 and an all-reduce), so they differ by float32 rounding (eps 1.2e-7) per step, and AdamW
normalises updates, so those differences do not grow much in 31 steps: measured max |diff| 1.2e-7 on the weights
and 5e-7 on the logged losses (8 significant digits). The tests allow 1e-5, about 100x that, while a rank that
reads the wrong sequences or a gradient not averaged shows up at 1e-3 or more (grad_norm is compared too: Adam
itself is blind to a gradient's scale).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from safetensors.numpy import load_file

from stages.core.cli import UserError
from stages.training.distributed import World, first_host, plan_batch, slurm_port, world_from_env

DENSE = {"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64}
MOE = {**DENSE, "moe": {"experts": 4, "top_k": 2, "aux_loss_coef": 0.01, "z_loss_coef": 0.001}}
TOLERANCE = 1e-5
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def train_args(corpus: Path, out: Path, kind: str = "dense", **train) -> list[str]:
    options = {"seq_len": 32, "batch_size": 8, "log_every": 1, **train}
    return [
        *("-m", "stages.train", "--kind", kind, "--run-id", f"test/{out.name}", "--data", str(corpus)),
        *("--tokens", "8K", "--out", str(out), "--seed", "3", "--data-seed", "4", "--train", json.dumps(options)),
        *("--model", json.dumps(MOE if kind == "scratch_moe" else DENSE), "--save-every", "10"),
        *("--work-dir", str(out.parent / f".work-{out.name}")),
    ]


def single(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env)


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def as_srun_tasks(args: list[str], logs: Path) -> list[tuple[int, str]]:
    """Two processes with the environment srun gives the tasks of one step (the rendezvous port set, since
    no SLURM job id keeps this one apart from other tests): each one's exit status and stderr."""
    procs = start_srun_tasks([sys.executable, *args], 2, logs)
    return [(p.wait(timeout=120), (logs / f"{rank}.log").read_text()) for rank, p in enumerate(procs)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_srun_tasks(cmd: list[str], n: int, logs: Path) -> list[subprocess.Popen]:
    """``n`` processes with the environment srun gives the tasks of one step, each one's stderr in logs/<rank>.log."""
    slurm = {"SLURM_STEP_NUM_TASKS": str(n), "SLURM_STEP_NODELIST": "localhost", "MASTER_PORT": str(free_port())}
    logs.mkdir()
    procs = []
    for rank in range(n):
        with open(logs / f"{rank}.log", "w") as log:
            task = {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "OMP_NUM_THREADS": "1"}
            procs.append(subprocess.Popen(cmd, cwd=REPO, stderr=log, env={**os.environ, **slurm, **task}))
    return procs


def assert_same_run(one: Path, two: Path) -> None:
    """Same weights and metrics up to TOLERANCE, and the same files."""
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= TOLERANCE
    ma, mb = pd.read_csv(one / "metrics.csv"), pd.read_csv(two / "metrics.csv")
    assert list(ma.columns) == list(mb.columns) and len(ma) == len(mb) == 31
    for column in ("train_loss", "aux_loss", "z_loss", "grad_norm", "router_grad_norm"):
        assert np.allclose(ma[column], mb[column], rtol=TOLERANCE, atol=TOLERANCE), column
    listing = [sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) for run in (one, two)]
    assert listing[0] == listing[1]


def test_two_torchrun_processes_train_what_one_process_trains(tmp_path, corpus_dir):
    one, two = tmp_path / "one", tmp_path / "two"
    assert single(train_args(corpus_dir, one)).returncode == 0
    res = torchrun(train_args(corpus_dir, two))
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_run(one, two)
    assert "test/two: 2 processes (torchrun) x 1 pass of 4 sequences per step" in res.stderr
    assert res.stderr.count("tokens/s") == 1  # rank 0 alone reports
    # rank 0 alone writes: nothing but the two run directories, and no scratch state left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "one", "two"]
    record = json.loads((two / "provenance.json").read_text())
    assert record["steps"] == 31 and record["tokens_per_step"] == 8 * 32


def test_moe_on_two_srun_tasks_equals_one_process_in_passes_of_their_share(tmp_path, corpus_dir):
    """Balancing and z losses are per pass, so 2 x 4 sequences is 1 process in passes of 4 (bit for bit here)."""
    one, two = tmp_path / "one", tmp_path / "two"
    res = single(train_args(corpus_dir, one, "scratch_moe", micro_batch_size=4))
    assert res.returncode == 0, res.stderr
    assert "test/one: 1 process x 2 passes of 4 sequences per step" in res.stderr
    (status0, log0), (status1, log1) = as_srun_tasks(train_args(corpus_dir, two, "scratch_moe"), tmp_path / "logs")
    assert (status0, status1) == (0, 0), log0[-2000:] + log1[-2000:]
    assert "test/two: 2 processes (srun) x 1 pass of 4 sequences per step" in log0 and log1 == ""
    assert_same_run(one, two)
    metrics = pd.read_csv(two / "metrics.csv")
    assert (metrics["tokens_per_expert"] == 8 * 32 * 2 / 4).all()  # of the whole step, not of one pass
    assert (metrics["aux_loss"] > 0).all() and (metrics["z_loss"] > 0).all()


@pytest.mark.parametrize(
    ("env", "train", "message"),
    [
        ({"RANK": "0", "WORLD_SIZE": "3"}, {}, "train.batch_size 8: must be a multiple of 3 processes"),
        (
            {"RANK": "1", "WORLD_SIZE": "2"},
            {"micro_batch_size": 3},
            "train.batch_size 8: must be a multiple of 2 processes x train.micro_batch_size 3",
        ),
        ({}, {"micro_batch_size": 3}, "train.batch_size 8: must be a multiple of train.micro_batch_size 3"),
    ],
)
def test_a_batch_that_does_not_split_is_one_line_exit_2(tmp_path, corpus_dir, env, train, message):
    """Checked before the rendezvous: the process says why and exits, instead of waiting for ranks."""
    res = single(train_args(corpus_dir, tmp_path / "x", **train), env={**os.environ, **env})
    assert res.returncode == 2 and res.stderr.splitlines() == [f"error: {message}"]
    assert not (tmp_path / "x").exists()


def test_world_from_the_launchers_environment():
    assert world_from_env({}) == World()
    torchrun_env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "9"}
    assert world_from_env(torchrun_env) == World(3, 4, 1, "env://", "torchrun")
    srun_env = {
        "SLURM_PROCID": "5",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[07-10]",
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "0",
    }
    world = world_from_env(srun_env)
    assert (world.rank, world.size, world.local_rank, world.launcher) == (5, 8, 1, "srun")
    assert world.init_method == f"tcp://gpu07:{slurm_port('4242', '0')}"
    # a batch script carries the job's task count but is no srun task: one process, no waiting for ranks
    assert world_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242"}) == World()
    with pytest.raises(UserError, match="RANK"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(UserError, match="outside a world of 2"):
        world_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_slurm_host_lists_and_ports():
    assert first_host("vm") == "vm"
    assert first_host("gpu[003-010,012]-ib,cpu1") == "gpu003-ib"
    assert first_host("a[1-2]-b[5],c7") == "a1-b5"
    assert first_host("node7,node8") == "node7"
    assert slurm_port("123", "0") == slurm_port("123", "0") != slurm_port("123", "1")
    assert all(20000 <= slurm_port(str(j), "0") < 40000 for j in (0, 1, 10**9))


def test_batch_plan_splits_the_global_batch_into_contiguous_shares():
    plan = plan_batch(World(1, 2), 8, 2)
    assert (plan.per_rank, plan.passes, plan.micro_batch, plan.loss_weight) == (4, 2, 2, 0.25)
    assert plan.offset(16) == 20 and not plan.single_pass
    assert plan_batch(World(), 8, 0).single_pass and plan_batch(World(), 8, 8).single_pass


def test_the_cluster_section_becomes_slurm_resources_and_a_launcher():
    """One task: the jobstep's srun -n1 with the job's GPUs. Several: the executor's mpi path, srun's tasks inside a
    SLURM job and torchrun elsewhere (the prefix decides at run time, by SLURM_JOB_ID)."""
    from stages.workflow.cluster import job_resources

    cfg = {"train": {"threads": 2}, "cluster": {"dense": {"nodes": 2, "tasks": 4}, "moe": {"gpus": 0}}}
    assert job_resources(cfg, "scratch") == {"launch": "", "gpu": 1}
    assert job_resources(cfg, "moe") == {"launch": ""}
    dense = job_resources(cfg, "dense")
    assert {k: v for k, v in dense.items() if k != "launch"} == {
        "nodes": 2,
        "tasks": 4,
        "mpi": "srun",
        "slurm_extra": "--ntasks-per-node=2 --gpus-per-node=2",
    }
    env = {"PATH": os.environ["PATH"]}
    on_slurm, elsewhere = (
        subprocess.run(["bash", "-c", f"echo {dense['launch']}"], env=e, capture_output=True, text=True).stdout.strip()
        for e in ({**env, "SLURM_JOB_ID": "7"}, env)
    )
    assert on_slurm == "srun --kill-on-bad-exit=1 --nodes=2 --ntasks=4 --ntasks-per-node=2 --cpus-per-task=2"
    assert elsewhere == "torchrun --standalone --nproc_per_node=4 --no-python"


@pytest.mark.parametrize(
    ("cluster", "train", "message"),
    [
        ({"dense": {"tasks": 3}}, {}, "'train.batch_size': 16 is not a multiple of cluster.dense.tasks 3"),
        (
            {"moe": {"tasks": 2}},
            {"micro_batch_size": 16},
            "not a multiple of cluster.moe.tasks 2 x train.micro_batch_size",
        ),
        ({"stable": {"nodes": 2}}, {}, "'cluster.stable.tasks': 1 tasks do not spread evenly over 2 nodes"),
        ({"scratch": {"tasks": 4, "nodes": 2, "gpus": 3}}, {}, "'cluster.scratch.gpus': 3 GPUs do not spread evenly"),
        ({"denze": {}}, {}, "'cluster': 'denze' is not one of"),
        (
            {"moe": {"tasks": 2}},
            {"backend": "nanotron"},
            "'cluster.moe.tasks': train.backend nanotron starts its own",
        ),
    ],
)
def test_a_cluster_section_that_cannot_split_a_batch_is_refused(cluster, train, message):
    from stages.workflow.config import load_yaml, validate_config

    cfg = load_yaml(REPO / "config" / "config.yaml")
    cfg["train"] = {**cfg["train"], "batch_size": 16, **train}
    with pytest.raises(UserError, match=message):
        validate_config({**cfg, "cluster": cluster})


def wait_for(path: Path, procs: list[subprocess.Popen], limit: float = 120) -> None:
    """Until ``path`` exists (the processes are mid-run), or fail if one of them ended first."""
    start = time.monotonic()
    while not path.exists():
        assert all(p.poll() is None for p in procs), "a process ended before the run got going"
        assert time.monotonic() - start < limit, f"{path} never appeared"
        time.sleep(0.05)


def end_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def error_line(log: str) -> str:
    """The one error line a process ended with: the last line, no traceback anywhere before it."""
    assert "Traceback" not in log and "gloo" not in log, log[-3000:]
    assert [line for line in log.splitlines() if line.startswith("error:")] == log.splitlines()[-1:], log[-3000:]
    return log.splitlines()[-1]


@pytest.mark.parametrize(
    ("sig", "message"),
    [
        (signal.SIGSTOP, "error: rank 0 of 2 (srun): rank 1 stalled: nothing arrived within 5 s (--dist-timeout"),
        (signal.SIGKILL, "error: rank 0 of 2 (srun): rank 1 died (its connection closed) at all-reduce "),
    ],
)
def test_a_rank_that_stalls_or_dies_ends_the_other_with_one_line_naming_it(tmp_path, corpus_dir, sig, message):
    """Rank 1 of a long run is stopped (or killed) once rank 0 saved progress at step 10: rank 0 gives up after the
    5 s timeout (or at once), exit 2, one line that names rank 1. Without a timeout gloo would wait 30 minutes."""
    out = tmp_path / "run"
    args = train_args(corpus_dir, out)
    args[args.index("--tokens") + 1] = "2M"  # 7812 steps: far from done when the signal comes
    procs = start_srun_tasks([sys.executable, *args, "--dist-timeout", "5"], 2, tmp_path / "logs")
    try:
        wait_for(tmp_path / ".work-run" / "progress.pt", procs)
        procs[1].send_signal(sig)
        start = time.monotonic()
        status = procs[0].wait(timeout=90)  # the bound: a hang fails here
        print(f"rank 0 ended {time.monotonic() - start:.1f} s after rank 1 got {sig.name}")
    finally:
        end_all(procs)
    assert status == 2
    assert error_line((tmp_path / "logs" / "0.log").read_text()).startswith(message)
    assert not out.exists()


WORLD_OF_THREE = """
import sys, time, torch
from stages.core.cli import run
from stages.training.distributed import all_reduce_step, process_group, world_from_env

def main(argv):
    p = torch.nn.Parameter(torch.ones(4))
    with process_group(world_from_env(), torch.device("cpu"), 3):
        for step in range(10**6):
            p.grad = torch.ones(4)
            all_reduce_step([p], torch.zeros(2))
            if step == 20:
                open(sys.argv[1] + f"/{world_from_env().rank}.ready", "w").close()
            time.sleep(0.002)

run(main)
"""


@pytest.mark.parametrize("stopped", [2, 0])
def test_in_a_world_of_three_the_others_give_up_in_one_line(tmp_path, stopped):
    """Beyond two ranks every survivor exits 2 with one line within a bounded time. Which rank it names is best
    effort (the survivors that gave up say so in the store; a stalled rank 0, the store's host under srun, blocks
    the reader, which then names rank 0): timing on a loaded machine can make a slow survivor look lost."""
    procs = start_srun_tasks([sys.executable, "-c", WORLD_OF_THREE, str(tmp_path)], 3, tmp_path / "logs")
    try:
        wait_for(tmp_path / f"{stopped}.ready", procs)
        procs[stopped].send_signal(signal.SIGSTOP)
        statuses = {r: p.wait(timeout=90) for r, p in enumerate(procs) if r != stopped}
    finally:
        end_all(procs)
    for rank, status in statuses.items():
        assert status == 2
        line = error_line((tmp_path / "logs" / f"{rank}.log").read_text())
        pattern = rf"error: rank {rank} of 3 \(srun\): (one of )?ranks? [\d, ]+ stalled: nothing arrived within 3 s"
        assert re.match(pattern, line), line


def test_the_timeout_reaches_training_jobs_but_never_their_identity():
    """A workflow setting passed to every training job as --dist-timeout: a resource, no param, no rerun."""
    from stages.workflow.sections import StudyTraining

    assert StudyTraining().dist_timeout == 300
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        assert text.count("python -m stages.train") == text.count("--dist-timeout {resources.dist_timeout}"), smk
