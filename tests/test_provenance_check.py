"""``stages.provenance --check`` verifies every digest and value it follows: a byte flipped in any recorded file
(weights, metrics.csv, eval.json, runs table, fit JSON, the figure's PNG and PDF) fails it in one line naming the
file. The study is laid out as the workflow lays out a named study, and is traced with no flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, write_corpus

SHAPE = json.dumps({"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64})
TRAIN = json.dumps({"seq_len": 32, "batch_size": 8, "log_every": 4})
DENSE, CONT = "dense/t/d1_4K", "dense_cont/t/d1_4K/d2_2K"


def stage(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    if check:
        assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """results/demo/: a dense run and its continuation, evaluated, collected, one fit and training_curves."""
    root = tmp_path_factory.mktemp("work") / "results" / "demo"
    corpus = write_corpus(root / "data" / "synthetic")
    common = ["--data", str(corpus), "--train", TRAIN, "--seed", "1", "--data-seed", "2"]
    tables, fit, figure = root / "tables", root / "fits" / "chinchilla.json", root / "figures" / "training_curves"
    stage("stages.train", "--kind", "dense", "--run-id", DENSE, "--tokens", "4096", "--model", SHAPE, *common,
          "--labels", json.dumps({"kind": "dense", "model": "t", "D1": "4K"}),
          "--out", str(root / DENSE))  # fmt: skip
    stage("stages.train", "--kind", "dense_cont", "--run-id", CONT, "--tokens", "2048", "--init", str(root / DENSE),
          *common, "--labels", json.dumps({"kind": "dense_cont", "model": "t", "D1": "4K", "D2": "2K"}),
          "--out", str(root / CONT))  # fmt: skip
    evals = [root / "eval" / run_id / "eval.json" for run_id in (DENSE, CONT)]
    for run_id, out in zip((DENSE, CONT), evals, strict=True):
        stage("stages.evaluate", "--checkpoint", str(root / run_id), "--tokens", str(corpus / "val.bin"),
              "--max-tokens", "512", "--out", str(out))  # fmt: skip
    stage("stages.collect", "--evals", *map(str, evals), "--out", str(tables / "runs.csv"))
    public = pd.read_csv(REPO / "tests" / "data" / "chinchilla_epoch_extracted.csv")
    public["D"] = public["Training FLOP"] / (6 * public["Model Size"])
    public.to_csv(tables / "public.csv", index=False)
    stage("stages.fit", "--table", str(tables / "public.csv"), "--law", "chinchilla", "--grid", "40",
          "--map", "N=Model Size", "--workers", "1", "--out", str(fit))  # fmt: skip
    stage("stages.figures", "training_curves", "--runs", str(tables / "runs.csv"), "--fit", str(fit),
          "--metrics", str(root), "--out", str(figure))  # fmt: skip
    return root


def check(path: Path) -> subprocess.CompletedProcess:
    return stage("stages.provenance", str(path), "--check", check=False)


def test_a_study_checks_clean_without_flags(study):
    """No --results: the run ids of results/demo/tables/runs.csv live under results/demo/."""
    for target in ("figures/training_curves.png", "figures/training_curves.pdf", "tables/runs.csv"):
        res = check(study / target)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "MISMATCH" not in res.stdout and "MISSING" not in res.stdout
    out = check(study / "figures" / "training_curves.png").stdout
    assert f"run ids under {study}" in out
    for followed in ("metrics.csv: sha256", "eval.json: values ok", "tokens ", "fit ", "pdf ", "<- " + DENSE):
        assert followed in out, followed
    assert out.count("metrics.csv: sha256") == 2 and out.count("values ok") == 2
    help_text = stage("stages.provenance", "--help").stdout
    assert "results/<study>/" in help_text


def flip(path: Path, at: int) -> bytes:
    """Flip the low bit of the byte at ``at`` (negative: from the end); the original bytes, to put back."""
    original = path.read_bytes()
    data = bytearray(original)
    data[at] ^= 1
    path.write_bytes(bytes(data))
    return original


def json_value_position(path: Path, key: str) -> int:
    """Where the value of ``key`` starts in a JSON file (its first digit or hex character)."""
    text = path.read_bytes()
    at = text.index(f'"{key}": '.encode()) + len(key) + 4
    return at + (1 if text[at : at + 1] == b'"' else 0) + 2


@pytest.mark.parametrize(
    ("target", "where"),
    [
        (f"{DENSE}/metrics.csv", -3),
        (f"{CONT}/metrics.csv", 40),
        (f"{DENSE}/model.safetensors", -1),
        (f"eval/{CONT}/eval.json", "val_loss"),
        (f"eval/{DENSE}/eval.json", "tokens_sha256"),
        (f"eval/{DENSE}/eval.json", "checkpoint_sha256"),
        ("tables/runs.csv", -5),
        ("fits/chinchilla.json", -10),
        ("figures/training_curves.pdf", 200),
        ("figures/training_curves.pdf", -40),
        ("figures/training_curves.png", 100),
        ("figures/training_curves.png", -1),
        ("data/synthetic/val.bin", 7),
    ],
)
def test_one_flipped_byte_in_any_recorded_file_fails_the_check_in_one_line_naming_it(study, target, where):
    path = study / target
    at = json_value_position(path, where) if isinstance(where, str) else where
    original = flip(path, at)
    try:
        res = check(study / "figures" / "training_curves.png")
    finally:
        path.write_bytes(original)
    assert res.returncode == 2, res.stdout[-3000:]
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith("error: "), res.stderr
    assert str(path) in res.stderr


def test_a_traced_eval_json_verifies_its_tokens(study):
    path = study / "data" / "synthetic" / "val.bin"
    original = flip(path, 11)
    try:
        res = check(study / "eval" / DENSE / "eval.json")
    finally:
        path.write_bytes(original)
    assert res.returncode == 2 and res.stderr.startswith(f"error: {path}: MISMATCH with the sha256 in "), res.stderr
