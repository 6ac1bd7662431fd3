"""The trainer: determinism, resume after SIGKILL, continued data stream, user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

MODEL = json.dumps({"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64})
MOE = json.dumps({"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64, "moe": {"experts": 4, "top_k": 2}})


def train_cmd(corpus: Path, out: Path, *extra: str, tokens: str = "8K", kind: str = "dense", **train) -> list[str]:
    options = json.dumps({"seq_len": 32, "batch_size": 8, "log_every": 1, **train})
    base = [
        sys.executable,
        "-m",
        "stages.train",
        "--kind",
        kind,
        "--run-id",
        f"test/{out.name}",
        "--data",
        str(corpus),
        "--tokens",
        tokens,
        "--out",
        str(out),
        "--seed",
        "3",
        "--data-seed",
        "4",
        "--train",
        options,
        "--work-dir",
        str(out.parent / f".work-{out.name}"),
    ]
    if "--state-out" in extra:  # a stable segment writes a branch state, not a run directory
        base[base.index("--out") : base.index("--out") + 2] = []
    if "--init" not in extra:
        base += ["--model", MOE if kind == "scratch_moe" else MODEL]
    return base + list(extra)


def run_ok(cmd: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res


def files(run: Path) -> dict[str, bytes]:
    return {
        name: (run / name).read_bytes()
        for name in ("model.safetensors", "metrics.csv", "config.json", "provenance.json")
    }


def test_same_inputs_give_identical_bytes(tmp_path, corpus_dir):
    run_ok(train_cmd(corpus_dir, tmp_path / "a", kind="scratch_moe"))
    run_ok(train_cmd(corpus_dir, tmp_path / "b", kind="scratch_moe"))
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert a["model.safetensors"] == b["model.safetensors"] and a["metrics.csv"] == b["metrics.csv"]
    metrics = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("step,tokens,lr,train_loss,aux_loss")
    assert "frac_l0_e3" in metrics[0]
    first, last = float(metrics[1].split(",")[3]), float(metrics[-1].split(",")[3])
    assert last < first - 0.5  # it learns
    prov = json.loads((tmp_path / "a" / "provenance.json").read_text())
    assert prov["steps"] == 8000 // 256 and prov["tokens"] == prov["steps"] * 256 and prov["kind"] == "scratch_moe"


def test_metrics_and_record_report_router_health(tmp_path, corpus_dir):
    import pandas as pd

    res = run_ok(train_cmd(corpus_dir, tmp_path / "moe", kind="scratch_moe"))
    run_ok(train_cmd(corpus_dir, tmp_path / "dense"))
    moe, dense = (pd.read_csv(tmp_path / run / "metrics.csv") for run in ("moe", "dense"))
    new = ["dead_experts", "min_expert_tokens", "tokens_per_expert", "router_grad_norm"]
    assert list(moe.columns[6:13]) == ["drop_rate", "grad_norm", *new, "frac_l0_e0"]
    assert list(dense.columns) == list(moe.columns[:12])
    assert moe["dead_experts"].between(0, 1).all() and (moe["router_grad_norm"] > 0).all()
    # 8 sequences of 32 tokens, top-2 of 4 experts: 128 assignments per expert on average
    assert (moe["tokens_per_expert"] == 8 * 32 * 2 / 4).all()
    assert (moe["min_expert_tokens"] <= moe["tokens_per_expert"]).all() and (moe["min_expert_tokens"] >= 0).all()
    fractions = moe[[c for c in moe.columns if c.startswith("frac_l0_")]]
    assert ((fractions == 0).mean(axis=1) == moe["dead_experts"]).all()  # one MoE layer
    assert (dense[new] == 0).all().all()
    verdict = json.loads((tmp_path / "moe" / "provenance.json").read_text())["router_health"]
    assert f"router health: {verdict}" in res.stderr and verdict.split(" (")[0] in (
        "balanced",
        "collapsed",
        "dead experts",
    )
    assert json.loads((tmp_path / "dense" / "provenance.json").read_text())["router_health"] is None


def test_router_health_verdicts():
    from stages.training.metrics import router_health

    def rows(*fractions: list[float], repeat: int = 10) -> list[dict]:
        return [{f"frac_l1_e{e}": f for e, f in enumerate(fr)} for fr in fractions for _ in range(repeat)]

    balanced = [0.25, 0.25, 0.25, 0.25]
    assert router_health(rows(balanced), (1,), 4, 1) == "balanced"
    # top-1 of 4: collapsed above a token share of (1 + 1/4) / 2 = 62.5%; the early rows do not count
    assert router_health(rows([0.7, 0.1, 0.1, 0.1]), (1,), 4, 1) == "collapsed (layer 1: expert 0 takes 70% of tokens)"
    assert router_health(rows([0.6, 0.2, 0.1, 0.1]), (1,), 4, 1) == "balanced"
    assert router_health(rows([0.1, 0.1, 0.1, 0.7], balanced, repeat=9), (1,), 4, 1) == "balanced"
    # top-2: fractions count assignments, so a share is 2 x fraction; threshold (1 + 2/4) / 2 = 75%
    assert router_health(rows([0.4, 0.2, 0.2, 0.2]), (1,), 4, 2).startswith("collapsed (layer 1: expert 0 takes 80%")
    dead = router_health(rows([0.4, 0.3, 0.3, 0.0]), (1,), 4, 1)
    assert dead == "dead experts (layer 1: 1 of 4 got no token in the last 10% of logged steps)"
    assert router_health(rows([0.4, 0.3, 0.3, 0.0], balanced, repeat=9), (1,), 4, 1) == "balanced"  # revived


def test_killed_run_resumes_to_identical_bytes(tmp_path, corpus_dir):
    reference = tmp_path / "ref"
    run_ok(train_cmd(corpus_dir, reference, "--save-every", "10", tokens="64K"))
    killed = tmp_path / "killed"
    cmd = train_cmd(corpus_dir, killed, "--save-every", "10", tokens="64K")
    progress = tmp_path / ".work-killed" / "progress.pt"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not progress.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()  # no complete-looking output after a kill
    res = run_ok(cmd)
    assert "resuming" in res.stderr
    a, b = files(killed), files(reference)
    assert a["model.safetensors"] == b["model.safetensors"] and a["metrics.csv"] == b["metrics.csv"]
    pa, pb = (json.loads(x.pop("provenance.json")) for x in (a, b))
    assert {k: v for k, v in pa.items() if k != "run_id"} == {k: v for k, v in pb.items() if k != "run_id"}
    assert not progress.parent.exists()  # scratch state removed after success


def test_continued_run_starts_where_its_parent_stopped(tmp_path, corpus_dir):
    run_ok(train_cmd(corpus_dir, tmp_path / "parent"))
    run_ok(
        train_cmd(
            corpus_dir, tmp_path / "child", "--init", str(tmp_path / "parent"), kind="dense_cont", lr_policy="continue"
        )
    )
    parent = json.loads((tmp_path / "parent" / "provenance.json").read_text())
    child = json.loads((tmp_path / "child" / "provenance.json").read_text())
    assert child["data"]["start_sequence"] == parent["data"]["end_sequence"] == parent["steps"] * 8
    assert child["lineage"][-1]["weights_sha256"] == parent["weights_sha256"]
    assert child["schedule"]["prior_steps"] == parent["steps"]


def test_non_finite_loss_stops_with_one_line(tmp_path, corpus_dir):
    res = subprocess.run(
        train_cmd(corpus_dir, tmp_path / "nan", lr=1e30, grad_clip=0), cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "non-finite training loss" in last and "at step" in last and "Traceback" not in res.stderr
    assert not (tmp_path / "nan" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("extra", "train", "message"),
    [
        (["--tokens", "10"], {}, "fewer than one step"),
        (["--model", "{bad json"], {}, "--model"),
        ([], {"min_lr_ratio": 2}, "--train: config key 'train.min_lr_ratio'"),
        ([], {"lr_sched": "wsd"}, "unknown key"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, corpus_dir, extra, train, message):
    cmd = train_cmd(corpus_dir, tmp_path / "x", *extra, **train)
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_truncated_shard_and_tokenizer_mismatch(tmp_path, corpus_dir):
    run_ok(train_cmd(corpus_dir, tmp_path / "parent"))
    other = tmp_path / "other"
    from conftest import write_corpus

    write_corpus(other, vocab=128)
    res = subprocess.run(
        train_cmd(other, tmp_path / "child", "--init", str(tmp_path / "parent"), kind="dense_cont"),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "vocab_size" in res.stderr
    with open(corpus_dir / "train.bin", "r+b") as f:
        f.truncate(1001)
    res = subprocess.run(train_cmd(corpus_dir, tmp_path / "y"), cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and "train.bin" in res.stderr and "sha256" in res.stderr


def test_wsd_run_follows_its_schedule(tmp_path, corpus_dir):
    run_ok(train_cmd(corpus_dir, tmp_path / "wsd", lr=0.004, lr_policy="wsd", warmup_steps=5, decay_frac=0.25))
    lrs = [float(line.split(",")[2]) for line in (tmp_path / "wsd" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(lrs) == 31 and lrs[4] == lrs[22] == 0.004  # warmup of 5 steps, then the peak held until the decay
    assert lrs[23] < 0.004 and lrs[-1] == pytest.approx(0.0004)  # 8 decay steps (1-sqrt) down to min_lr
    record = json.loads((tmp_path / "wsd" / "provenance.json").read_text())
    assert record["schedule"] == {
        "warmup_steps": 5,
        "prior_steps": 0,
        "total_steps": 31,
        "decay_steps": 8,
        "branch_step": 0,
    }


def test_cooldowns_from_one_stable_run_equal_independent_wsd_runs(tmp_path, corpus_dir):
    """Two budgets, one stable run: each cooldown ends with the bytes of its own single-process run."""
    wsd = dict(lr=0.004, lr_policy="wsd", warmup_steps=4, decay_frac=0.25)
    states = tmp_path / "stable"
    # 8K tokens = 31 steps (decay from step 23), 16K = 62 steps (decay from step 46): stable segments 0-23, 23-46
    run_ok(
        train_cmd(
            corpus_dir,
            tmp_path / "seg1",
            "--stop-step",
            "23",
            "--state-out",
            str(states / "b23.pt"),
            tokens="8K",
            **wsd,
        )
    )
    run_ok(
        train_cmd(
            corpus_dir,
            tmp_path / "seg2",
            "--start-state",
            str(states / "b23.pt"),
            "--stop-step",
            "46",
            "--state-out",
            str(states / "b46.pt"),
            tokens="16K",
            **wsd,
        )
    )
    assert not (tmp_path / "seg1" / "model.safetensors").exists()  # a segment's product is its branch state
    for tokens, state in (("8K", "b23.pt"), ("16K", "b46.pt")):
        run_ok(
            train_cmd(
                corpus_dir, tmp_path / f"cool{tokens}", "--start-state", str(states / state), tokens=tokens, **wsd
            )
        )
        run_ok(train_cmd(corpus_dir, tmp_path / f"single{tokens}", tokens=tokens, **wsd))
        a, b = files(tmp_path / f"cool{tokens}"), files(tmp_path / f"single{tokens}")
        assert a["model.safetensors"] == b["model.safetensors"] and a["metrics.csv"] == b["metrics.csv"]
        record = json.loads(a["provenance.json"])
        assert record["schedule"]["branch_step"] == int(state[1:3]) and record["steps"] == {"8K": 31, "16K": 62}[tokens]
    other = train_cmd(
        corpus_dir, tmp_path / "x", "--start-state", str(states / "b23.pt"), tokens="8K", **{**wsd, "lr": 0.003}
    )
    res = subprocess.run(other, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and "another run family" in res.stderr


def test_periodic_validation_is_logged_and_leaves_the_weights_alone(tmp_path, corpus_dir):
    """val_loss at every eval_every-th row (step 1, 1 + eval_every, ...) and the last, empty in between; the
    same weights as with evaluation off."""
    import pandas as pd

    run_ok(train_cmd(corpus_dir, tmp_path / "on", kind="scratch_moe", eval_every=10, eval_tokens=256))
    run_ok(train_cmd(corpus_dir, tmp_path / "off", kind="scratch_moe", eval_every=0))
    on, off = files(tmp_path / "on"), files(tmp_path / "off")
    assert on["model.safetensors"] == off["model.safetensors"]
    m_on = pd.read_csv(tmp_path / "on" / "metrics.csv")
    m_off = pd.read_csv(tmp_path / "off" / "metrics.csv")
    steps = 8000 // (8 * 32)  # 8K tokens
    measured = m_on.loc[m_on["val_loss"].notna(), "step"].tolist()
    assert measured == [s for s in range(1, steps + 1) if (s - 1) % 10 == 0 or s == steps]
    assert (m_on["val_loss"].dropna() > 0).all()
    assert "val_loss" not in m_off.columns  # off (the default): the columns of before
    assert m_on["train_loss"].tolist() == m_off["train_loss"].tolist()
    assert not (tmp_path / "on" / "tensorboard").exists()  # TensorBoard is off by default


def test_tensorboard_without_the_package_is_one_line(tmp_path, corpus_dir):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        res = subprocess.run(
            train_cmd(corpus_dir, tmp_path / "tb", tensorboard=True), cwd=REPO, capture_output=True, text=True
        )
        assert res.returncode == 2 and "train.tensorboard" in res.stderr and "Traceback" not in res.stderr
    else:
        run_ok(train_cmd(corpus_dir, tmp_path / "tb", tensorboard=True))
        assert any((tmp_path / "tb" / "tensorboard").iterdir())


def test_progress_folder_lives_under_the_study_root():
    from stages.training.job import Job
    from stages.training.options import TrainConfig

    def job(out, run_id="dense/s/d1_1K", **kw):
        return Job("dense", run_id, Path("d"), 1000, out, 1, 2, TrainConfig(lr_policy="wsd"), model={}, **kw)

    assert job(Path("results/a/dense/s/d1_1K")).scratch == Path("results/a/.work/dense/s/d1_1K")
    assert job(Path("results/dense/s/d1_1K")).scratch == Path("results/.work/dense/s/d1_1K")
    assert job(Path("elsewhere/x")).scratch == Path("results/.work/dense/s/d1_1K")
    assert job(Path("x"), work_dir=Path("w")).scratch == Path("w")
    segment = job(None, "stable/dense/s/b_5", state_out=Path("results/a/stable/dense/s/b_5.pt"), stop_step=5)
    assert segment.scratch == Path("results/a/.work/stable/dense/s/b_5")


def test_a_stable_segment_writes_the_same_branch_state_bytes_every_time(tmp_path, corpus_dir):
    """The declared branch-state .pt of a stable segment is byte-identical across runs (no temp-file names or
    other per-run values inside the archive), so the DAG's determinism promise reaches it."""
    wsd = dict(lr=0.004, lr_policy="wsd", warmup_steps=4, decay_frac=0.25)
    states = []
    for attempt in ("a", "b"):
        path = tmp_path / attempt / "b23.pt"
        run_ok(train_cmd(corpus_dir, tmp_path / attempt / "seg", "--stop-step", "23", "--state-out", str(path), **wsd))
        states.append(path.read_bytes())
    assert states[0] == states[1]
