"""Runs table, fit table and provenance tracer on real (small) runs: the reporting half outside the slow tier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, write_corpus

SHAPE = json.dumps({"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64})
TRAIN = json.dumps({"seq_len": 32, "batch_size": 8, "log_every": 4})


def stage(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    if check:
        assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A dense run, its continuation and an upcycled child, each evaluated, collected into runs.csv."""
    root = tmp_path_factory.mktemp("study")
    corpus = write_corpus(root / "data")
    common = ["--data", str(corpus), "--train", TRAIN, "--seed", "1", "--data-seed", "2"]
    stage(
        "stages.train",
        "--kind",
        "dense",
        "--run-id",
        "dense/t/d1_4K",
        "--tokens",
        "4096",
        "--model",
        SHAPE,
        "--out",
        str(root / "dense"),
        *common,
    )
    stage(
        "stages.train",
        "--kind",
        "dense_cont",
        "--run-id",
        "dense_cont/t/d1_4K/d2_2K",
        "--tokens",
        "2048",
        "--init",
        str(root / "dense"),
        "--out",
        str(root / "cont"),
        *common,
    )
    stage(
        "stages.upcycle",
        "--dense",
        str(root / "dense"),
        "--data",
        str(corpus),
        "--seed",
        "3",
        "--eval-tokens",
        "512",
        "--moe",
        '{"experts": 4, "top_k": 2, "norm_topk_prob": true}',
        "--recipe",
        '{"method": "drop", "drop_ratio": 0.5, "drop_per_matrix_indices": true}',
        "--out",
        str(root / "init"),
    )
    stage(
        "stages.train",
        "--kind",
        "upcycled",
        "--run-id",
        "moe/t/d1_4K/e4k2/d2_2K",
        "--tokens",
        "2048",
        "--init",
        str(root / "init"),
        "--out",
        str(root / "moe"),
        *common,
    )
    evals = []
    for run in ("dense", "cont", "moe"):
        evals.append(str(root / "eval" / run / "eval.json"))
        stage(
            "stages.evaluate",
            "--checkpoint",
            str(root / run),
            "--tokens",
            str(corpus / "val.bin"),
            "--max-tokens",
            "1024",
            "--out",
            evals[-1],
        )
    stage("stages.collect", "--evals", *evals, "--out", str(root / "runs.csv"))
    return root


def test_runs_table_counts_tokens_and_sunk_compute_from_the_lineage(study):
    runs = pd.read_csv(study / "runs.csv").set_index("kind")
    assert list(pd.read_parquet(study / "runs.parquet").columns) == list(pd.read_csv(study / "runs.csv").columns)
    dense, cont, moe = runs.loc["dense"], runs.loc["dense_cont"], runs.loc["upcycled"]
    assert (dense["D1"], dense["D2"], dense["D"]) == (4096, 0, 4096)
    assert (cont["D1"], cont["D2"], cont["D_total"]) == (4096, 2048, 6144)
    assert (moe["D1"], moe["D2"], moe["experts"], moe["top_k"]) == (4096, 2048, 4, 2)
    assert dense["flops_total"] == dense["flops_run"]
    assert moe["flops_total"] == pytest.approx(dense["flops_run"] + moe["flops_run"])  # sunk dense cost, once
    assert moe["N_dense"] == dense["N_total"] and moe["N_active"] > dense["N_active"]
    assert moe["sparsity"] == pytest.approx(moe["N_total"] / moe["N_active"]) and moe["sparsity"] > 1
    assert (moe["method"], moe["drop_ratio"], moe["drop_indices"]) == ("drop", 0.5, "per_matrix")
    assert np.isfinite(moe["step0_val_loss"]) and moe["step0_val_loss"] > moe["parent_val_loss"]  # drop perturbs
    assert (cont["schedule"], moe["seq_len"], moe["batch_size"]) == ("cosine", 32, 8)
    assert moe["router_health"].split(" (")[0] in ("balanced", "collapsed", "dead experts")
    assert pd.isna(dense["router_health"]) and pd.isna(cont["router_health"])  # empty for dense runs


def test_provenance_check_passes_then_catches_tampering(study, tmp_path):
    for run in ("dense", "moe"):
        res = stage("stages.provenance", str(study / run), "--check", check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "MISMATCH" not in res.stdout
    assert "<- dense/t/d1_4K" in res.stdout  # the upcycled run's chain names its dense ancestor
    weights = study / "dense" / "model.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        res = stage("stages.provenance", str(study / "moe"), "--check", check=False)
        assert res.returncode == 2 and "MISMATCH" in res.stdout and "link(s) do not verify" in res.stderr
        res = stage("stages.provenance", str(study / "moe"), check=False)  # without --check: reported, exit 0
        assert res.returncode == 0 and "MISMATCH" in res.stdout
    finally:
        weights.write_bytes(original)


def test_fit_table_from_fits_of_public_data(tmp_path):
    public = pd.read_csv(REPO / "tests" / "data" / "chinchilla_epoch_extracted.csv")
    public["D"] = public["Training FLOP"] / (6 * public["Model Size"])
    table = tmp_path / "chinchilla.csv"
    public.to_csv(table, index=False)
    fits = []
    for name, extra in (("full", []), ("heldout", ["--holdout", "N > 5e9"])):
        fits.append(tmp_path / f"{name}.json")
        stage(
            "stages.fit",
            "--table",
            str(table),
            "--law",
            "chinchilla",
            "--grid",
            "40",
            "--map",
            "N=Model Size",
            *extra,
            "--out",
            str(fits[-1]),
        )
    stage("stages.tables", "--fits", *map(str, fits), "--out", str(tmp_path / "params"))
    out = pd.read_csv(tmp_path / "params.csv")
    assert list(out["fit"]) == ["full", "heldout"] and (out["law"] == "chinchilla").all()
    assert out.loc[1, "n_points"] < out.loc[0, "n_points"] and np.isfinite(out.loc[1, "holdout_rmse_log"])
    assert np.isnan(out.loc[0, "holdout_rmse_log"])
    markdown = (tmp_path / "params.md").read_text()
    lines = markdown.splitlines()
    assert [line.split(" | ")[0] for line in lines[:1] + lines[2:]] == ["| fit", "| full", "| heldout"]
    assert set(lines[1]) == {"|", "-"} and lines[1].count("|") == lines[0].count("|")
    bad = stage("stages.tables", "--fits", str(table), "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_every_routing_and_recipe_option_has_a_runs_table_column():
    from stages.core.options import option_fields
    from stages.model.config import MoEConfig
    from stages.report.runs_table import COLUMNS, OPTION_COLUMNS
    from stages.surgery.recipe import UpcycleRecipe

    renamed = {"layers": "moe_layers", "drop_per_matrix_indices": "drop_indices"}
    for group in (MoEConfig, UpcycleRecipe):
        for f in option_fields(group):
            assert renamed.get(f.name, f.name) in COLUMNS + OPTION_COLUMNS, f.name
