"""The compute ledger (python -m stages.ledger): hand-computed FLOPs, wsd sharing, the printed table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from stages.workflow.accounting import format_ledger, gpu_hours, ledger_lines, load_config, summarize
from stages.workflow.grid import Grid

# one dense model, one budget: no MoE, no fits, no planner
ONE_RUN = """
data: {vocab_size: 300}
models: {a: {n_layer: 1, d_model: 32, n_head: 2, d_ff: 64}}
train: {seq_len: 16, batch_size: 2, lr_policy: cosine, dense_cont_lr_policy: cosine%s}
grid:
  dense: {models: [a], d1: [%s]}
  upcycled: null
  scratch_moe: null
  dense_cont: null
  replicas: null
evaluate: {max_tokens: 64}
fits: {dense_chinchilla: null, dense_heldout: null, scratch_chinchilla: null, upcycled: null, upcycled_heldout: null,
       upcycled_no_interaction: null, upcycled_additive: null}
figures: [loss_vs_compute]
planner: null
"""
# attention 2 * (32*32) * 2 = 4096, SwiGLU 3*32*64 = 6144, output head 300*32 = 9600 (tied, still a matmul)
FPT = 6 * (4096 + 6144 + 9600)  # 119,040 training FLOPs per token (6N)
TRAINED = (1000 // 32) * 32  # 31 whole steps of 32 tokens = 992 tokens
EVAL = 64 * FPT / 3  # a forward pass over evaluate.max_tokens


def config(tmp_path: Path, d1: str = "1000", train: str = ", warmup_steps: 0") -> dict:  # 31 steps: no 78-step warmup
    path = tmp_path / "grid.yaml"
    path.write_text(ONE_RUN % (train, d1))
    return load_config([path])


def test_one_model_one_budget_is_counted_by_hand(tmp_path):
    cfg = config(tmp_path)
    lines = {line.kind: line for line in ledger_lines(cfg)}
    assert set(lines) == {"dense", "evaluate"}
    assert lines["dense"].tokens == TRAINED == 992
    assert lines["dense"].flops == FPT * TRAINED == 118_087_680
    assert lines["evaluate"].flops == pytest.approx(EVAL)
    assert summarize(cfg).total_flops == pytest.approx(118_087_680 + 2_539_520)
    assert gpu_hours(3.6e15, 0.5, 1.0) == pytest.approx(2.0)


def test_wsd_grid_counts_the_shared_stable_phase_once(tmp_path):
    cfg = config(tmp_path, "320, 640, 1280", ", lr_policy: wsd, dense_cont_lr_policy: wsd, warmup_steps: 2")
    grid = Grid(cfg)
    lines = ledger_lines(cfg)
    stable = [x for x in lines if x.kind == "stable"]
    cooldowns = [x for x in lines if x.kind == "dense"]
    longest = max(grid.branch_step(r) for r in grid.runs)
    assert len(stable) == 3 and len(cooldowns) == 3
    assert sum(x.tokens for x in stable) == longest * 32  # the stable run once, up to the last decay start
    trained = sum(x.tokens for x in stable + cooldowns)
    assert trained == grid.trained_steps()[0] * 32 < (10 + 20 + 40) * 32
    assert sum(x.flops for x in stable + cooldowns) == FPT * trained
    text = format_ledger(cfg)
    assert "shared wsd stable runs" in text and f"vs {FPT * 70 * 32:.3e} for independent runs" in text


def test_paper_ledger_matches_the_dag_and_prints_a_table():
    res = subprocess.run(
        [sys.executable, "-m", "stages.ledger", "--configfile", "config/paper.yaml", "--mfu", "0.4"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0].startswith("compute ledger: 6N FLOPs per token") and "MFU 0.4 of 989 TFLOP/s" in out[0]
    assert out[1].split() == ["kind", "jobs", "tokens", "FLOPs", "GPU-hours", "share"]
    rows = {line.split()[0]: line.split() for line in out[3:] if line[:1].isalpha() and len(line.split()) == 6}
    # job counts are the DAG's (tests/test_workflow.py SHIPPED_GRIDS["paper"])
    jobs = {k: int(v[1]) for k, v in rows.items()}
    assert jobs == {
        "dense": 16,
        "scratch_moe": 12,
        "upcycled": 36,
        "dense_cont": 12,
        "stable": 76,
        "upcycle_eval": 12,
        "evaluate": 76,
        "total": 240,
    }
    total = float(rows["total"][3])
    assert total == pytest.approx(sum(float(v[3]) for k, v in rows.items() if k != "total"), rel=1e-3)
    assert 1e20 < total < 1e21  # tens of billions of tokens on models up to 1B
    assert float(rows["total"][4].replace(",", "")) == pytest.approx(gpu_hours(total, 0.4, 989), rel=1e-3)
    assert any(line.startswith("largest training job: results/stable/dense/xl/") for line in out)


def test_bad_mfu_is_one_line_exit_2():
    res = subprocess.run(
        [sys.executable, "-m", "stages.ledger", "--mfu", "35"], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 2 and res.stderr.startswith("error: --mfu") and "Traceback" not in res.stderr
