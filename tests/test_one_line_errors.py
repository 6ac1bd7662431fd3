"""Known user errors end in one line naming the file or key (exit status 2), not in a traceback: a window longer
than the model, a write the system refuses, a warmup longer than the run, a study named like a results folder."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from stages.core.artifacts import atomic_path, write_json
from stages.core.cli import UserError, run
from stages.evaluate import main as evaluate_main
from stages.train import main as train_main
from stages.training.schedule import warmup_problem

SHAPE = {"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64}


def train_args(corpus: Path, out: Path, tokens: str = "256", **train) -> list[str]:
    options = {"seq_len": 32, "batch_size": 8, **train}
    return [
        *("--kind", "dense", "--run-id", "test/x", "--data", str(corpus), "--tokens", tokens, "--out", str(out)),
        *("--seed", "1", "--data-seed", "2", "--model", json.dumps(SHAPE), "--train", json.dumps(options)),
        *("--work-dir", str(out.parent / ".work")),
    ]


def one_line_error(main, argv: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run(main, argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err.removeprefix("error: ").strip()


def test_evaluating_windows_longer_than_the_model_is_one_line(tmp_path, corpus_dir, capsys):
    """The model's RoPE tables and promise end at max_seq_len (32 here): --seq-len 1000 is refused up front."""
    run(train_main, train_args(corpus_dir, tmp_path / "run"))
    for seq_len in ("1000", "-3"):
        argv = ["--checkpoint", str(tmp_path / "run"), "--tokens", str(corpus_dir / "val.bin"), "--seq-len", seq_len]
        err = one_line_error(evaluate_main, [*argv, "--out", str(tmp_path / "eval.json")], capsys)
        assert err == f"--seq-len {seq_len}: must lie in 1..32, the max_seq_len of {tmp_path / 'run' / 'config.json'}"
    assert not (tmp_path / "eval.json").exists()


def test_a_warmup_longer_than_the_run_is_refused_not_cut(tmp_path, corpus_dir, capsys):
    """31 steps with warmup_steps 100000 used to train with 30 warmup steps, silently."""
    argv = train_args(corpus_dir, tmp_path / "run", tokens="8K", warmup_steps=100000)
    err = one_line_error(train_main, argv, capsys)
    assert err.startswith("train.warmup_steps: 100000 warmup steps do not end before the 31 steps of the run")
    assert not (tmp_path / "run").exists()
    assert warmup_problem("cosine", 31, 30, "r") is None  # the longest warmup a 31-step run can finish
    assert "31 steps of r (lr policy wsd)" in warmup_problem("wsd", 31, 31, "r")
    assert warmup_problem("constant_min", 31, 100, "r") is None  # no warmup to cut
    assert warmup_problem("cosine", 31, 0, "r") is None  # warmup_frac decides


def test_the_workflow_refuses_that_warmup_while_the_dag_is_built():
    from stages.workflow.config import load_yaml, validate_config

    cfg = load_yaml(REPO / "config" / "config.yaml")
    cfg["train"]["warmup_steps"] = 100000
    with pytest.raises(UserError) as info:
        validate_config(cfg)
    assert str(info.value).startswith("config key 'train.warmup_steps': 100000 warmup steps do not end before the ")
    assert "\n" not in str(info.value)


def test_a_study_named_like_a_results_folder_says_so():
    from stages.workflow.config import load_yaml, validate_config

    cfg = load_yaml(REPO / "config" / "config.yaml")
    cfg["study"] = "dense"
    with pytest.raises(UserError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert message.startswith("config key 'study': 'dense' is the name of a top-level folder of results/")
    assert "collide" in message and "expected e.g. 250K" not in message and "\n" not in message


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        OSError(errno.EACCES, os.strerror(errno.EACCES)),
        Exception("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors
    ],
)
def test_a_write_the_system_refuses_names_the_file_and_the_reason(tmp_path, failure):
    target = tmp_path / "out" / "eval.json"
    with pytest.raises(UserError) as info, atomic_path(target):
        raise failure
    reason = os.strerror(failure.errno) if isinstance(failure, OSError) else "No space left on device"
    assert str(info.value) == f"{target}: cannot write it ({reason})"
    assert list(target.parent.iterdir()) == []  # no temporary sibling left behind
    with pytest.raises(ValueError, match="a bug"), atomic_path(target):  # anything else: a bug, its traceback
        raise ValueError("a bug")


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


def test_a_checkpoint_the_disk_refuses_is_one_line_naming_it(tmp_path, corpus_dir):
    """A real refusal: files may not grow past 8 KB, the weights are larger (metrics.csv is not)."""
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "stages.train", *train_args(corpus_dir, out, tokens="1K"), "--save-every", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.splitlines()[-1] == f"error: {out / 'model.safetensors'}: cannot write it (File too large)"
    assert "Traceback" not in res.stderr and not (out / "model.safetensors").exists()
    write_json(tmp_path / "fine.json", {"ok": True})  # the limit was the child's only
