"""The training_curves figure: train and validation loss against tokens, drawn from each run's metrics.csv."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import REPO
from PIL import Image

from stages.report.figure_specs import FIGURE_SPECS
from stages.report.plots.curves import read_curves, training_curves
from stages.report.plots.registry import FIGURES

RUNS = [  # run_id, kind, model, moe, D1, D2, D, tokens trained
    ("dense/s/d1_2K", "dense", "s", "", 2000, None, None, 2000),
    ("dense/s/d1_4K", "dense", "s", "", 4000, None, None, 4000),
    ("dense/m/d1_4K", "dense", "m", "", 4000, None, None, 4000),
    ("moe/s/d1_2K/e4k2/d2_2K", "upcycled", "s", "e4k2", 2000, 2000, None, 2000),
    ("moe/s/d1_4K/e4k2/d2_2K", "upcycled", "s", "e4k2", 4000, 2000, None, 2000),
    ("scratch/s/e4k2/d_4K", "scratch_moe", "s", "e4k2", None, None, 4000, 4000),
    ("dense_cont/s/d1_2K/d2_2K", "dense_cont", "s", "", 2000, 2000, None, 2000),
]


def results_tree(root: Path) -> Path:
    """A tiny synthetic results tree: runs.csv and a metrics.csv per run (val_loss every 4th row, as trained)."""
    rows = []
    for run_id, kind, model, moe, d1, d2, d, tokens in RUNS:
        rows.append({"run_id": run_id, "kind": kind, "model": model, "moe": moe, "D1": d1, "D2": d2, "D": d})
        steps = tokens // 250
        metrics = pd.DataFrame(
            {
                "step": range(1, steps + 1),
                "tokens": [250 * s for s in range(1, steps + 1)],
                "train_loss": [5.0 / math.log(2 + s) for s in range(1, steps + 1)],
                "val_loss": [
                    5.1 / math.log(2 + s) if (s - 1) % 4 == 0 or s == steps else None for s in range(1, steps + 1)
                ],
            }
        )
        (root / run_id).mkdir(parents=True)
        metrics.to_csv(root / run_id / "metrics.csv", index=False)
    (root / "tables").mkdir()
    pd.DataFrame(rows).to_csv(root / "tables" / "runs.csv", index=False)
    return root


def draw(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "stages.figures", "training_curves", "--runs", str(root / "tables" / "runs.csv")]
    return subprocess.run([*cmd, *extra, "--out", str(out)], cwd=REPO, capture_output=True, text=True)


def test_registered_and_needs_no_fit():
    assert FIGURES["training_curves"] is training_curves
    spec = FIGURE_SPECS["training_curves"]
    assert spec.fits == () and not spec.needs_fits and spec.metrics


def test_figure_renders_from_a_tiny_results_tree_with_deterministic_bytes(tmp_path):
    root = results_tree(tmp_path / "results" / "study")
    for name in ("a", "b"):
        res = draw(root, tmp_path / name, "--metrics", str(root))
        assert res.returncode == 0, res.stderr
    for ext in ("png", "pdf"):
        a, b = (tmp_path / f"a.{ext}").read_bytes(), (tmp_path / f"b.{ext}").read_bytes()
        assert a == b and len(a) > 5000
    record = json.loads(Image.open(tmp_path / "a.png").info["provenance"])
    assert record["figure"] == "training_curves" and len(record["metrics"]) == len(RUNS)


def test_curves_and_panels(tmp_path):
    root = results_tree(tmp_path)
    runs = pd.read_csv(root / "tables" / "runs.csv")
    curves, paths = read_curves(runs, root)
    assert set(curves) == {r[0] for r in RUNS} and all(p.name == "metrics.csv" for p in paths.values())
    fig = training_curves(runs, {}, curves)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["dense", "MoE from scratch", "upcycled MoE: s e4k2", "dense continued: s"]
    upcycled = next(ax for ax in fig.axes if ax.get_title().startswith("upcycled"))
    xs = [x for line in upcycled.get_lines() for x in line.get_xdata()]
    assert min(xs) == 250 and max(xs) == 4000 + 2000  # the parent's curve, then the child at D1 + tokens


def test_missing_metrics_is_one_line(tmp_path):
    root = results_tree(tmp_path / "r")
    (root / RUNS[0][0] / "metrics.csv").unlink()
    res = draw(root, tmp_path / "x", "--metrics", str(root))
    assert res.returncode == 2 and "metrics.csv: file not found" in res.stderr and "Traceback" not in res.stderr
    res = draw(root, tmp_path / "y")  # without --metrics: one line, not a traceback
    assert res.returncode == 2 and "--metrics" in res.stderr and "Traceback" not in res.stderr


def test_old_metrics_without_val_loss_still_draw(tmp_path):
    root = results_tree(tmp_path)
    for run_id, *_ in RUNS:
        path = root / run_id / "metrics.csv"
        pd.read_csv(path).drop(columns="val_loss").to_csv(path, index=False)
    runs = pd.read_csv(root / "tables" / "runs.csv")
    curves, _ = read_curves(runs, root)
    assert all(frame["val_loss"].isna().all() for frame in curves.values())
    training_curves(runs, {}, curves)
