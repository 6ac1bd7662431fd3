"""Learning-rate sweeps (grid.lr_sweep): the runs and paths the grid makes, their seeds and options, config errors,
one real run through the trainer and the runs table, and the lr_sweep figure."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, write_corpus

from stages.core.cli import UserError
from stages.workflow.accounting import merge, summarize
from stages.workflow.config import load_yaml, validate_config
from stages.workflow.grid import Grid
from stages.workflow.runs import lr_label

MUP = merge(load_yaml(REPO / "config" / "config.yaml"), load_yaml(REPO / "config" / "mup.yaml"))


def sweep_config(**grid) -> dict:
    cfg = copy.deepcopy(MUP)
    cfg["grid"]["lr_sweep"] = grid or cfg["grid"]["lr_sweep"]
    return cfg


def test_the_mup_config_sweeps_every_model_at_every_lr():
    grid = Grid(validate_config(MUP))
    runs = grid.of_kind("lr_sweep")
    assert len(runs) == len(grid.runs) == 6 * 5  # nothing else is trained
    assert grid.segments == {}  # wsd, but each lr is one independent job
    run = grid.run("lr_sweep", "w128_mup", d="400K", lr=lr_label(0.004))
    assert run in runs
    assert run.directory == "results/mup/lr_sweep/w128_mup/lr_0.004/d_400K"
    assert run.eval_json == "results/mup/eval/lr_sweep/w128_mup/lr_0.004/d_400K/eval.json"
    assert run.labels() == {"kind": "lr_sweep", "model": "w128_mup", "D": "400K", "lr": "0.004"}
    assert run.budget == "400K" and grid.branch_step(run) == 0
    train = json.loads(grid.run_train_json(run))
    assert train["lr"] == 0.004 and train["lr_policy"] == "wsd" and train["warmup_steps"] == 78
    args = grid.train_args(run)  # its rule's param: the sweep's own seed, the lr in the train JSON, no branch state
    assert f"--seed {grid.sweep_seed('w128_mup')} " in args and '"lr":0.004' in args and "--start-state" not in args


def test_lr_labels_read_back_exactly():
    for lr in (0.001, 0.003, 1e-5, 0.0031622776601683794, 1.0, 2):
        assert float(lr_label(lr)) == lr
    assert lr_label(0.01) == "0.01" and lr_label(1e-5) == "1e-05"


def test_seeds_ignore_lr_budget_and_parametrization_but_not_width():
    grid = Grid(validate_config(sweep_config(models=["w64_sp", "w64_mup", "w128_sp"], lr=[0.001, 0.01], d=["64K"])))
    assert grid.sweep_seed("w64_sp") == grid.sweep_seed("w64_mup")  # the base width: the same bits
    assert grid.sweep_seed("w64_sp") != grid.sweep_seed("w128_sp")
    assert grid.sweep_seed("w64_sp") != grid.seed("dense", "w64_sp")
    assert len({grid.data_seed(r.model) for r in grid.runs}) == 1


def test_a_sweep_point_can_be_replicated_with_another_seed():
    cfg = sweep_config()
    cfg["grid"]["replicas"] = {"runs": ["lr_sweep/w64_sp/lr_0.004/d_400K"]}
    grid = Grid(validate_config(cfg))
    (again,) = [r for r in grid.runs if r.model == "w64_sp@2"]
    assert again.run_id == "lr_sweep/w64_sp@2/lr_0.004/d_400K" and again.labels()["replica"] == "2"
    assert grid.sweep_seed("w64_sp@2") != grid.sweep_seed("w64_sp")
    assert grid.data_seed("w64_sp@2") != grid.data_seed("w64_sp")


def test_a_section_may_be_a_list_of_blocks():
    cfg = sweep_config()
    cfg["grid"]["lr_sweep"] = [
        {"models": ["w64_sp", "w64_mup"], "lr": [0.001, 0.01], "d": ["64K", "128K"]},
        {"models": ["w256_mup"], "lr": [0.003], "d": ["64K"]},
    ]
    ids = sorted(r.run_id for r in Grid(validate_config(cfg)).runs)
    assert len(ids) == 2 * 2 * 2 + 1
    assert "lr_sweep/w256_mup/lr_0.003/d_64K" in ids and "lr_sweep/w64_sp/lr_0.01/d_128K" in ids


def test_the_ledger_counts_the_sweep():
    rows = {kind: jobs for kind, jobs, _, _ in summarize(validate_config(MUP)).rows}
    assert rows == {"lr_sweep": 30, "evaluate": 30}


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"models": ["zz"], "lr": [0.01], "d": ["64K"]}, "config key 'grid.lr_sweep.models': 'zz' is not defined"),
        ({"models": ["w64_sp"], "lr": [], "d": ["64K"]}, "config key 'grid.lr_sweep.lr': must not be empty"),
        ({"models": ["w64_sp"], "lr": [0], "d": ["64K"]}, "config key 'grid.lr_sweep.lr.0': 0 is out of range"),
        ({"models": ["w64_sp"], "lr": ["1e-3"], "d": ["64K"]}, "config key 'grid.lr_sweep.lr.0': expected number"),
        ({"models": ["w64_sp"], "lr": [0.01, 0.01], "d": ["64K"]}, "config key 'grid.lr_sweep.lr': has duplicate"),
        ({"models": ["w64_sp"], "lr": [0.01], "d": ["100"]}, "config key 'grid.lr_sweep.d': '100' is less than"),
        ({"models": ["w64_sp"], "d": ["64K"]}, "config key 'grid.lr_sweep': 'lr' is a required property"),
        (
            {"models": ["w64_sp"], "lr": [0.01], "d": ["64K"], "d1": ["64K"]},
            "config key 'grid.lr_sweep.d1': unknown key",
        ),
    ],
)
def test_bad_sweeps_are_one_line_errors_naming_the_key(grid, message):
    with pytest.raises(UserError) as err:
        validate_config(sweep_config(**grid))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_figure_needs_a_sweep():
    cfg = sweep_config()
    cfg["grid"]["lr_sweep"] = None
    cfg["grid"]["dense"] = {"models": ["w64_sp"], "d1": ["64K"]}
    with pytest.raises(UserError, match="config key 'figures': 'lr_sweep' draws the runs of grid.lr_sweep"):
        validate_config(cfg)


def stage(*args: str) -> None:
    res = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_sweep_run_trains_and_reaches_the_runs_table(tmp_path):
    corpus = write_corpus(tmp_path / "data")
    shape = {"n_layer": 1, "d_model": 64, "n_head": 2, "d_ff": 128}
    evals = []
    for name, extra in (("sp", {}), ("mup", {"parametrization": "mup", "mup_base_d_model": 32})):
        run_id = f"lr_sweep/w64_{name}/lr_0.01/d_2K"
        stage(
            *("stages.train", "--kind", "lr_sweep", "--run-id", run_id, "--data", str(corpus), "--tokens", "2048"),
            *("--model", json.dumps({**shape, **extra}), "--train", '{"seq_len": 32, "batch_size": 8, "lr": 0.01}'),
            *("--labels", json.dumps({"kind": "lr_sweep", "model": f"w64_{name}", "D": "2K", "lr": "0.01"})),
            *("--seed", "1", "--data-seed", "2", "--out", str(tmp_path / run_id)),
        )
        evals.append(str(tmp_path / "eval" / run_id / "eval.json"))
        stage(
            *("stages.evaluate", "--checkpoint", str(tmp_path / run_id), "--tokens", str(corpus / "val.bin")),
            *("--max-tokens", "512", "--out", evals[-1]),
        )
    stage("stages.collect", "--evals", *evals, "--out", str(tmp_path / "runs.csv"))
    table = pd.read_csv(tmp_path / "runs.csv").set_index("model")
    assert list(table["kind"]) == ["lr_sweep", "lr_sweep"]
    assert table.loc["w64_mup", "parametrization"] == "mup" and table.loc["w64_sp", "parametrization"] == "sp"
    assert (table["peak_lr"] == 0.01).all() and (table["D"] == 2048).all() and (table["D1"] == 2048).all()


def sweep_table() -> pd.DataFrame:
    """Synthetic sweep results: the best lr halves per doubling of width under sp, stays at 0.01 under mup."""
    rows = []
    for parametrization in ("mup", "sp"):  # listed mup first: the figure still puts sp on the left
        for width in (256, 64, 128):
            best = 0.01 * (64 / width if parametrization == "sp" else 1.0)
            for lr in (0.03, 0.01, 0.003, 0.001):
                rows.append(
                    {
                        "run_id": f"lr_sweep/w{width}_{parametrization}/lr_{lr!r}/d_400K",
                        "kind": "lr_sweep",
                        "model": f"w{width}_{parametrization}",
                        "d_model": width,
                        "N_active": 12 * width**2,
                        "D": 399872,
                        "peak_lr": lr,
                        "parametrization": parametrization,
                        "val_loss": 4.0 - 0.3 * np.log2(width / 64) + 0.2 * np.log10(lr / best) ** 2,
                    }
                )
    return pd.DataFrame(rows)


def test_the_figure_marks_and_states_each_widths_best_lr():
    import matplotlib.colors

    from stages.report.plots.common import style
    from stages.report.plots.lr_sweep import lr_sweep
    from stages.report.plots.registry import FIGURES

    assert FIGURES["lr_sweep"] is lr_sweep
    style()
    fig = lr_sweep(sweep_table(), {})
    sp, mup = fig.axes
    assert sp.get_title().startswith("SP, D = 400K") and mup.get_title().startswith("muP, D = 400K")
    assert sp.get_title().endswith("64: 0.01, 128: 0.003, 256: 0.003")  # 0.005 is not on the grid: 0.003 is nearer
    assert mup.get_title().endswith("64: 0.01, 128: 0.01, 256: 0.01")
    assert sp.get_xscale() == "log"
    stars = [line for line in mup.get_lines() if line.get_marker() == "*"]
    assert [float(s.get_xdata()[0]) for s in stars] == [0.01, 0.01, 0.01]
    lines = [line for line in mup.get_lines() if line.get_marker() == "o"]
    assert len(lines) == 3 and len({matplotlib.colors.to_hex(line.get_color()) for line in lines}) == 3
    assert [t.get_text() for t in mup.get_legend().get_texts()][0] == "d_model 64 (N = 49.2K)"


def test_a_best_lr_at_the_edge_of_the_sweep_says_so():
    from stages.report.plots.common import style
    from stages.report.plots.lr_sweep import lr_sweep

    style()
    table = sweep_table()
    sp, mup = lr_sweep(table[table["peak_lr"] > 0.001], {}).axes  # sp: best lrs now at the low edge
    assert sp.get_title().endswith("64: 0.01, 128: ≤0.003, 256: ≤0.003")
    assert mup.get_title().endswith("64: 0.01, 128: 0.01, 256: 0.01")
    sp, mup = lr_sweep(table[table["peak_lr"] < 0.01], {}).axes
    assert mup.get_title().endswith("64: ≥0.003, 128: ≥0.003, 256: ≥0.003")


def test_the_figure_refuses_a_table_without_sweep_runs():
    from stages.report.plots.lr_sweep import lr_sweep

    with pytest.raises(UserError, match="no 'lr_sweep' runs"):
        lr_sweep(sweep_table().assign(kind="dense"), {})
