"""CPU smoke test of the GPU check's measuring script (bench/gpu_train_step.py): it runs and prints its table."""

from __future__ import annotations

import subprocess
import sys

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
