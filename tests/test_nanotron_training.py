"""nanotron's own trainer runs our jobs (CPU mode: gloo, pure-torch kernels, fp32) through the stage command the
DAG runs, and trains what the torch backend trains: the same per-step losses, learning rates, router losses and
statistics and final weights (to 1e-4; measured about 1e-6), for a dense model, an upcycled MoE (top-2
renormalised, balancing and z-losses) and a scratch MoE with a shared expert and gradient accumulation; a run
killed mid-way and resumed equals an uninterrupted one; two data-parallel processes equal one.

These need the nanotron environment that ``make nanotron-env`` builds (``make test`` does): without it they fail,
never skip. Each nanotron job starts nanotron's trainer in a process of its own (about 10 s on two cores).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, tokenizer_corpus

from stages.core.record import read_record
from stages.interop.nanotron_config import NANOTRON_COMMIT
from stages.interop.nanotron_run import LOCAL
from stages.model.checkpoint import load_model
from stages.model.config import MoEConfig
from stages.training.options import TrainConfig

TOLERANCE = 1e-4
STEPS = 32
TRAIN = TrainConfig(
    seq_len=16, batch_size=8, lr=0.004, min_lr_ratio=0.1, warmup_steps=4, lr_policy="wsd", decay_frac=0.25,
    weight_decay=0.05, beta1=0.85, beta2=0.97, adam_eps=1e-7, grad_clip=0.5, device="cpu", dtype="fp32",
    log_every=1, backend="torch",
)  # fmt: skip
DENSE = {"n_layer": 2, "d_model": 32, "n_head": 4, "d_ff": 64}
RENORMALISED = MoEConfig(experts=4, top_k=2, norm_topk_prob=True, aux_loss_coef=0.01, z_loss_coef=0.001)
SHARED = MoEConfig(experts=4, top_k=2, granularity=2, shared_expert_d_ff=32, aux_loss_coef=0.01)
COLUMNS = ["lr", "train_loss", "aux_loss", "z_loss", "grad_norm", "router_grad_norm", "drop_rate", "dead_experts"]


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    python, home = LOCAL / "venv" / "bin" / "python", LOCAL / "nanotron"
    if not python.is_file() or not (home / "run_train.py").is_file():
        pytest.fail("no nanotron environment in .nanotron: run `make nanotron-env` (make test does)")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("NANOTRON_", "SLURM_", "WORLD_SIZE", "RANK"))}
    return {**keep, "PYTHONHASHSEED": "0"}


@pytest.fixture(scope="module")
def study(tmp_path_factory, env) -> dict:
    """A corpus, a dense parent (torch backend) and its upcycled MoE: the starting points of the jobs below."""
    root = tmp_path_factory.mktemp("nanotron")
    corpus = tokenizer_corpus(root / "corpus")
    parent = root / "dense_parent"
    train_stage(env, corpus, parent, "dense", DENSE, TRAIN, root / "work", tokens=2048, seed=5)
    moe = root / "upcycled_init"
    run(
        [sys.executable, "-m", "stages.upcycle", "--dense", str(parent), "--out", str(moe), "--data", str(corpus)]
        + ["--moe", json.dumps(dataclasses.asdict(RENORMALISED)), "--seed", "9", "--eval-tokens", "512"],
        env,
    )
    return {"root": root, "corpus": corpus, "upcycled_init": moe, "runs": {}}


def run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def stage_command(corpus, out, kind, model, train, work, tokens, seed, init=None, save_every=0) -> list[str]:
    args = [sys.executable, "-m", "stages.train", "--kind", kind, "--run-id", f"{kind}/{out.name}"]
    args += ["--data", str(corpus), "--tokens", str(tokens)]
    args += ["--init", str(init)] if init else ["--model", json.dumps(model)]
    args += ["--train", json.dumps(dataclasses.asdict(train)), "--seed", str(seed), "--data-seed", "3"]
    return args + ["--out", str(out), "--work-dir", str(work), "--threads", "1", "--save-every", str(save_every)]


def train_stage(env, corpus, out, kind, model, train, work, tokens=STEPS * 128, seed=11, init=None) -> Path:
    run(stage_command(corpus, out, kind, model, train, work, tokens, seed, init), env)
    return out


JOBS = {
    "dense": ("dense", DENSE, {}, None),
    "upcycled": ("upcycled", None, {}, "upcycled_init"),
    "scratch_shared_expert": (
        "scratch_moe",
        {**DENSE, "moe": dataclasses.asdict(SHARED)},
        {"micro_batch_size": 4},
        None,
    ),
}


def job_run(study: dict, env: dict, name: str, backend: str, nproc: int = 1) -> Path:
    """The run of job ``name`` with ``backend`` (cached for the module)."""
    key = (name, backend, nproc)
    if key not in study["runs"]:
        kind, model, train_changes, init = JOBS[name]
        out = study["root"] / f"{name}_{backend}_{nproc}"
        start = study[init] if init else None
        train = dataclasses.replace(TRAIN, backend=backend, **train_changes)
        job_env = {**env, "NANOTRON_NPROC_PER_NODE": str(nproc)}
        study["runs"][key] = train_stage(
            job_env, study["corpus"], out, kind, model, train, out.with_suffix(".work"), init=start
        )
    return study["runs"][key]


def metrics(out: Path) -> list[dict[str, float]]:
    with open(out / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def max_differences(a: Path, b: Path) -> dict[str, float]:
    """Largest |difference| per metrics column over every step, and over every weight."""
    rows_a, rows_b = metrics(a), metrics(b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [float(s) for s in range(1, STEPS + 1)]
    assert rows_a[0].keys() == rows_b[0].keys()
    diff = {k: max(abs(x[k] - y[k]) for x, y in zip(rows_a, rows_b, strict=True)) for k in rows_a[0]}
    model_a, model_b = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    assert model_a.keys() == model_b.keys()
    diff["weights"] = max(float((model_a[k] - model_b[k]).abs().max()) for k in model_a)
    return diff


@pytest.mark.parametrize("name", list(JOBS))
def test_nanotron_trains_what_the_torch_backend_trains(study, env, name):
    ours, theirs = job_run(study, env, name, "torch"), job_run(study, env, name, "nanotron")
    diff = max_differences(ours, theirs)
    print(f"{name}: nanotron vs torch, max |diff|: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(diff.items())))
    assert all(v <= TOLERANCE for v in diff.values()), diff
    assert diff["lr"] <= 1e-12  # the same schedule, warmup included (nanotron's own starts one step later)
    record = read_record(theirs)
    assert record.backend == f"nanotron@{NANOTRON_COMMIT}" and record.steps == STEPS
    assert record.router_health == read_record(ours).router_health
    rows = metrics(theirs)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.3  # it learned
    if name != "dense":
        assert any(r["aux_loss"] > 0 for r in rows)  # the balancing loss is computed (nanotron has none)


def test_end_of_text_embedding_learns(study, env):
    """nanotron made the EOT id the embedding's padding_idx (no gradient); the backend sets no pad token."""
    out = job_run(study, env, "dense", "nanotron")
    yaml_text = (out / "nanotron.yaml").read_text()
    assert "pad_token_id: null" in yaml_text
    ours = load_model(job_run(study, env, "dense", "torch"))[0].state_dict()
    theirs = load_model(out)[0].state_dict()
    row = "model.embed_tokens.weight"
    assert float((theirs[row][0] - ours[row][0]).abs().max()) <= TOLERANCE


def test_two_data_parallel_processes_equal_one(study, env):
    one = job_run(study, env, "scratch_shared_expert", "nanotron")
    two = job_run(study, env, "scratch_shared_expert", "nanotron", nproc=2)
    diff = max_differences(one, two)
    print("2 processes vs 1: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(diff.items())))
    assert all(v <= TOLERANCE for v in diff.values()), diff


def test_killed_run_resumes_to_the_uninterrupted_one(study, env):
    """SIGKILL after nanotron's checkpoint at step 10, then the same command again: it resumes from that
    checkpoint (optimizer, lr, data position) and ends where the uninterrupted run ends."""
    kind, model, changes, _ = JOBS["scratch_shared_expert"]
    train = dataclasses.replace(TRAIN, backend="nanotron", **changes)
    out, work = study["root"] / "resumed", study["root"] / "resumed.work"
    command = stage_command(study["corpus"], out, kind, model, train, work, STEPS * 128, 11, save_every=10)
    job_env = {**env, "NANOTRON_NPROC_PER_NODE": "1"}
    first = subprocess.Popen(command, cwd=REPO, env=job_env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    latest = next(iter([work]))  # the checkpoint marker sits under the job's scratch folder
    deadline = time.monotonic() + 600
    while first.poll() is None and time.monotonic() < deadline:
        markers = list(latest.glob("**/nanotron/checkpoints/latest.txt"))
        if markers and markers[0].read_text().strip() == "10":
            os.killpg(first.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert first.wait() == -signal.SIGKILL, "the first attempt finished before it could be killed"
    logged = list(work.glob("**/nanotron/metrics.jsonl"))[0].read_text().splitlines()
    assert 10 <= len(logged) < STEPS
    run(command, job_env)
    uninterrupted = job_run(study, env, "scratch_shared_expert", "nanotron")
    diff = max_differences(uninterrupted, out)
    print("resumed vs uninterrupted: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(diff.items())))
    assert diff["lr"] == 0.0 and all(v <= 1e-6 for v in diff.values()), diff


def test_a_run_in_walltime_parts_ends_where_the_run_in_one_job_ends(study, env):
    """The commands of the DAG's part rules: the job stopped at steps 10 and 20 (``--part``), each piece resuming
    nanotron's checkpoint in the job's scratch folder and checking the part state before it, then the job itself.
    It ends where the run in one job ends (nanotron's resume, as above); a part state of another job is refused."""
    kind, model, changes, _ = JOBS["dense"]
    train = dataclasses.replace(TRAIN, backend="nanotron", **changes)
    root = study["root"] / "in_parts"
    out, work = root / "run", root / "run.work"
    whole = stage_command(study["corpus"], out, kind, model, train, work, STEPS * 128, 11)
    job_env = {**env, "NANOTRON_NPROC_PER_NODE": "1"}
    previous = None
    for stop in (10, 20):
        part = [a for a in whole]
        part[part.index("--run-id") + 1] = f"parts/dense/run/p_{stop}"
        at = part.index("--out")
        state = root / f"p_{stop}.pt"
        part[at : at + 2] = ["--state-out", str(state), "--stop-step", str(stop), "--part"]
        run(part + (["--start-state", str(previous)] if previous else []), job_env)
        assert json.loads(state.read_text())["step"] == stop
        previous = state
    other = dict(json.loads(previous.read_text()), nanotron_part_digest="0" * 64)
    (root / "other.pt").write_text(json.dumps(other))
    refused = subprocess.run(whole + ["--start-state", str(root / "other.pt")], cwd=REPO, env=job_env,
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and "not a part of this job" in refused.stderr, refused.stderr[-2000:]
    run(whole + ["--start-state", str(previous)], job_env)
    diff = max_differences(job_run(study, env, "dense", "nanotron"), out)
    print("in 3 parts vs one job: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(diff.items())))
    assert diff["lr"] == 0.0 and all(v <= 1e-6 for v in diff.values()), diff
    assert not work.exists()  # the job's scratch (the parts' checkpoints) goes with its success
