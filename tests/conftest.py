"""Shared fixtures: tiny model configs and a small synthetic corpus directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from stages.core.artifacts import sha256_file, write_json  # noqa: E402
from stages.model.config import ModelConfig, MoEConfig  # noqa: E402


def tiny_config(moe: MoEConfig | None = None, **overrides) -> ModelConfig:
    spec = dict(vocab_size=96, n_layer=2, d_model=32, n_head=4, d_ff=64, max_seq_len=32)
    spec.update(overrides)
    return ModelConfig(**spec, moe=moe)


def write_corpus(directory: Path, vocab: int = 96, n_train: int = 60_000, n_val: int = 8_000, seed: int = 0) -> Path:
    """A corpus directory with the layout of the data stage, filled with a learnable token process."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, 4, size=n_train + n_val)
    tokens = (np.cumsum(steps) % vocab).astype("<u2")
    tokens[:n_train].tofile(directory / "train.bin")
    tokens[n_train:].tofile(directory / "val.bin")
    (directory / "tokenizer.json").write_text('{"synthetic": true}\n')
    files = {
        k: {"name": f, "sha256": sha256_file(directory / f)}
        for k, f in (("train", "train.bin"), ("val", "val.bin"), ("tokenizer", "tokenizer.json"))
    }
    write_json(directory / "manifest.json", {"vocab_size": vocab, "files": files})
    return directory


def tokenizer_corpus(directory: Path, vocab: int = 96) -> Path:
    """A corpus whose tokenizer.json is a real one (word-level, with the end-of-text token nanotron needs)."""
    from tokenizers import Tokenizer, models

    write_corpus(directory, vocab=vocab)
    words = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, vocab)}}
    Tokenizer(models.WordLevel(words, unk_token="<|endoftext|>")).save(str(directory / "tokenizer.json"))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["tokenizer"]["sha256"] = sha256_file(directory / "tokenizer.json")
    write_json(directory / "manifest.json", manifest)
    return directory


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "data")


WORKFLOW_FILES = ("Snakefile", "workflow", "stages", "config", "profiles")


def snakemake_cmd(repo: Path, workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]


def run_snakemake(repo: Path, workdir: Path, *args: str, check: bool = True):
    import subprocess

    res = subprocess.run(snakemake_cmd(repo, workdir, *args), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="session")
def repo_copy(tmp_path_factory) -> Path:
    """A copy of the workflow code: tests may edit its stage modules without touching the checkout."""
    import shutil

    dst = tmp_path_factory.mktemp("repo")
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    return dst


@pytest.fixture(scope="session")
def tiny_run(repo_copy, tmp_path_factory) -> Path:
    """The tiny grid (config/tiny.yaml) run once, uninterrupted, from the repository copy."""
    workdir = tmp_path_factory.mktemp("tiny")
    run_snakemake(repo_copy, workdir, "--configfile", str(repo_copy / "config" / "tiny.yaml"), "--cores", "2")
    return workdir


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures a test drew are closed after it (those of wider-scoped fixtures stay open for the tests that read
    them), so a session of plotting tests does not hold them all."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    before = set(pyplot.get_fignums()) if pyplot is not None else set()
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        for number in set(pyplot.get_fignums()) - before:
            pyplot.close(number)
