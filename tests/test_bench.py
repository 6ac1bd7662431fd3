"""CPU smoke tests of the benches: the GPU check's measuring script (bench/gpu_train_step.py) prints its table;
bench/fit_vs_scipy.py's quick mode runs and both of its sides reach the same optimum."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

COLUMNS = ["check", "shape", "variant", "mode", "N_active", "tokens/s", "TFLOP/s", "MFU/ceil", "MFU/peak", "peak_GiB"]


def test_gpu_train_step_runs_on_cpu_and_prints_one_row_per_check():
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "gpu_train_step.py"),
            "--device",
            "cpu",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--configfile",
            str(REPO / "config" / "tiny.yaml"),
            "--shapes",
            "xs",  # the smallest shape of the tiny grid, dense and its MoE variant
            "--modes",
            "eager",
            "--checks",
            "ceiling,train",
            "--mm-size",
            "256",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert lines[0].startswith("# gpu_train_step: device cpu")
    header = [c.strip() for c in lines[1].split(" | ")]
    assert header == [*COLUMNS, "status"]
    rows = [[c.strip() for c in line.split(" | ")] for line in lines[3:-1]]
    assert all(len(r) == len(header) for r in rows), rows
    by = {(r[0], r[2]): dict(zip(header, r, strict=True)) for r in rows}
    assert by[("mm_ceiling", "fp32")]["status"] == "ok" and float(by[("mm_ceiling", "fp32")]["TFLOP/s"]) > 0
    for variant in ("dense", "e4k2"):  # the trainer's step, dense and MoE
        row = by[("train_step", variant)]
        assert row["status"] == "ok", row
        assert float(row["tokens/s"].replace(",", "")) > 0 and float(row["MFU/ceil"]) > 0
        assert row["MFU/peak"] == "-" and row["peak_GiB"] == "-"  # no datasheet peak or CUDA memory on a CPU
    assert by[("grouped_mm", "compiled")]["status"].startswith("SKIPPED")
    assert lines[-1].startswith("# 0 failed check(s)")


def test_fit_vs_scipy_quick_runs_and_both_sides_agree():
    """Smoke mode of bench/fit_vs_scipy.py: one row per law, the same optimum on both sides (times not judged)."""
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fit_vs_scipy.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    header = lines[1].split(" | ")
    assert header[:6] == ["law", "points", "starts", "fit_law_s", "plain_s", "ratio"]
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in (line.split(" | ") for line in lines[2:5])}
    assert set(rows) == {"chinchilla", "upcycled", "joint_upcycled"}
    for row in rows.values():
        ours, plain = float(row["fit_law_objective"]), float(row["plain_objective"])
        assert ours == pytest.approx(plain, rel=1e-9) and float(row["max_abs_dtheta"]) < 1e-3
        assert float(row["fit_law_s"]) > 0 and float(row["plain_s"]) > 0
    assert rows["upcycled"]["starts"] == "37"  # the 36-point grid and the profiled-floor start, on both sides


THROUGHPUT_COLUMNS = ["shape", "variant", "N_active", "ms ours", "ms hf", "ms plain", "tok/s ours", "GFLOP/s ours"]
THROUGHPUT_COLUMNS += ["ceil ours", "ceil hf", "ceil plain", "ours/hf", "ours/plain", "dloss0"]


def test_train_throughput_quick_mode_prints_ratios_for_dense_and_moe():
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert lines[0].startswith("# train_throughput:") and "1 thread(s)" in lines[0]
    header = [c.strip() for c in lines[1].split(" | ")]
    assert header == THROUGHPUT_COLUMNS
    rows = [dict(zip(header, (c.strip() for c in line.split(" | ")), strict=True)) for line in lines[3:-1]]
    assert rows[0]["variant"] == "dense" and len(rows) >= 2  # the first grid shape, dense and its MoE variant(s)
    for row in rows:  # numbers, never thresholds: timing is the machine's business
        for col in ("ours/hf", "ours/plain", "ceil ours", "ceil hf", "ceil plain"):
            assert float(row[col]) > 0, row
        assert float(row["dloss0"]) < 1e-3, row  # the three contenders compute the same loss on the same weights
    assert lines[-1].startswith("# ceiling:")


def test_nanotron_vs_torch_smoke_mode_prints_rates_and_equal_losses(tmp_path):
    """bench/nanotron_vs_torch.py on the CPU (nanotron's CPU mode, fp32): a row per job, the same losses."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "nanotron_vs_torch.py"), "--device", "cpu", "--small", "--steps", "8",
         "--batch", "8", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.startswith(("dense", "moe"))}
    assert set(rows) == {"dense", "moe_e8k2"}
    assert all(float(r[6]) <= 1e-4 for r in rows.values())  # max |train loss difference| per step
