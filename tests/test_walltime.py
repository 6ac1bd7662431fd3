"""Walltime parts: a training job estimated to outlast its rule's time limit trains as a chain of jobs whose
products are the bytes of the job in one piece (stages.workflow.walltime, Grid.chains, workflow/rules/parts.smk)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_snakemake

from stages.core.cli import UserError
from stages.model.compute import flops_per_token
from stages.workflow.accounting import format_ledger, load_config
from stages.workflow.cluster import rule_resources
from stages.workflow.grid import Grid
from stages.workflow.walltime import FILL, cut_points, job_tokens_per_second, steps_per_job

CONFIG = REPO / "config"
TINY = CONFIG / "tiny.yaml"
# 512 tokens per step (tiny.yaml); at 150 tokens/s a 1-minute limit holds floor(0.85 * 60 * 150 / 512) = 14 steps
SPLIT = "site: {max_runtime: 1, tokens_per_second: 150}\n"
H100_SITE = "site: {account: MYACCOUNT, gpu_partition: h100, gpu_type: h100, max_runtime: 1440}\n"


def overlay(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_cut_points_make_the_fewest_parts_within_the_limit_as_equal_as_whole_steps_allow():
    assert cut_points(0, 32, 14) == [10, 21]
    assert cut_points(0, 28, 14) == [14]
    assert cut_points(26, 51, 14) == [38]
    assert cut_points(0, 14, 14) == [] and cut_points(0, 10**9, None) == []
    for start, end, limit in ((0, 100, 7), (13, 1000, 99), (5, 6, 1)):
        bounds = [start, *cut_points(start, end, limit), end]
        assert all(0 < b - a <= limit for a, b in zip(bounds, bounds[1:], strict=False))


def test_steps_per_job_from_a_measured_throughput_or_the_gpus_at_the_stated_mfu(tmp_path):
    cfg = load_config([TINY, overlay(tmp_path, "s.yaml", SPLIT)])
    model = Grid(cfg).trained_model(Grid(cfg).runs[0])
    assert steps_per_job(cfg, "dense", model) == 14
    gpu = load_config([TINY, overlay(tmp_path, "g.yaml", "site: {max_runtime: 60, mfu: 0.5, gpu_tflops: 100}\n")])
    rate = job_tokens_per_second(gpu, "dense", model)
    assert rate == pytest.approx(0.5 * 100e12 / flops_per_token(model, 64, "6N"))  # one GPU: a task's default
    assert steps_per_job(gpu, "dense", model) == int(FILL * 3600 * rate / 512)


def test_a_job_without_gpus_and_without_a_measured_throughput_is_never_cut(tmp_path):
    cfg = load_config([TINY, overlay(tmp_path, "c.yaml", "site: {max_runtime: 1}\ncluster: {dense: {gpus: 0}}\n")])
    grid = Grid(cfg)
    assert steps_per_job(cfg, "dense", grid.trained_model(grid.runs[0])) is None
    assert not any(c.cuts for c in grid.chains.values() if c.rule == "dense")


def test_a_limit_shorter_than_one_step_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(UserError, match=r"site.max_runtime': 1 minutes do not fit one training step"):
        Grid(load_config([TINY, overlay(tmp_path, "t.yaml", "site: {max_runtime: 1, tokens_per_second: 1}\n")]))


def test_the_nanotron_backend_cuts_its_jobs_too(tmp_path):
    grid = Grid(load_config([TINY, overlay(tmp_path, "n.yaml", SPLIT + "train: {backend: nanotron}\n")]))
    assert grid.chains["dense/xs/d1_16K"].cuts == (10, 20)


def test_every_job_of_the_paper_grid_on_an_h100_site_fits_its_time_limit(tmp_path):
    """The README's H100 site (24-hour limit): at the stated MFU no job of config/paper.yaml outlasts its limit,
    and the longest runs (~42 GPU-hours on one GPU) are the ones cut."""
    cfg = load_config([CONFIG / "paper.yaml", overlay(tmp_path, "h100.yaml", H100_SITE)])
    grid = Grid(cfg)
    cut = [c for c in grid.chains.values() if c.cuts]
    assert cut and "stable/dense/xl/b_244140" in {c.job for c in cut}
    for chain in grid.chains.values():
        rate = job_tokens_per_second(cfg, chain.rule, grid.trained_model(chain.run))
        limit = rule_resources(cfg, chain.rule)["runtime"] * 60
        for first, end in chain.pieces:
            assert (end - first) * grid.tokens_per_step / rate <= FILL * limit, chain.job
    ledger = format_ledger(cfg)
    assert "train as 9 chained parts" in ledger and "stable/dense/xl/b_244140: steps 122070..244140 in 3 jobs" in ledger


def test_the_dry_run_chains_the_parts_of_a_run_into_its_own_job(tmp_path):
    """A 31-step cosine run (16K = 16000 tokens) at 14 steps per job: parts ending at steps 10 and 20, each
    continuing the one before, and the run's own rule continuing the last."""
    res = run_snakemake(
        REPO,
        tmp_path,
        "results/dense/xs/d1_16K/metrics.csv",
        "-n",
        "-p",
        "--configfile",
        str(TINY),
        str(overlay(tmp_path, "s.yaml", SPLIT)),
    )
    calls = [line for line in res.stdout.splitlines() if "python -m stages.train" in line]
    assert len(calls) == 3, res.stdout[-3000:]
    parts = "results/parts/dense/xs/d1_16K"
    assert (
        f"--stop-step 10 --part --threads 1 --save-every 0 --dist-timeout 300 --state-out {parts}/p_10.pt" in (calls[0])
    )
    assert f"--start-state {parts}/p_10.pt --stop-step 20 --part" in calls[1]
    assert f"--start-state {parts}/p_20.pt --out results/dense/xs/d1_16K" in calls[2]


def test_part_flags_are_checked_in_one_line(tmp_path):
    base = [sys.executable, "-m", "stages.train", "--kind", "dense", "--run-id", "r", "--data", str(tmp_path)]
    base += ["--tokens", "4096", "--model", "{}", "--seed", "1", "--data-seed", "2"]
    cases = {
        ("--out", str(tmp_path / "o"), "--part"): "--part: needs --stop-step and --state-out",
        ("--state-out", str(tmp_path / "s.pt"), "--stop-step", "3", "--train", '{"lr_policy": "cosine"}'): (
            "--stop-step without --part: only a wsd schedule"
        ),
    }
    for extra, message in cases.items():
        res = subprocess.run([*base, *extra], capture_output=True, text=True, cwd=REPO)
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


MINI = """train: {lr_policy: wsd, dense_cont_lr_policy: cosine, warmup_steps: 4, save_every: 0}
grid:
  dense: {models: [xs], d1: [16K, 32K]}
  upcycled: {models: [xs], moe: [e4k2], d1: [16K], d2: [16K]}
  scratch_moe: null
  dense_cont: {models: [xs], d1: [16K], d2: [16K]}
"""
TARGETS = [
    "results/dense/xs/d1_16K/metrics.csv",
    "results/dense/xs/d1_32K/metrics.csv",
    "results/dense_cont/xs/d1_16K/d2_16K/metrics.csv",
    "results/moe/xs/d1_16K/e4k2/d2_16K/metrics.csv",
]


@pytest.mark.slow
def test_runs_and_stable_segments_in_parts_are_byte_identical_to_one_job_each(tmp_path):
    """Every kind of piece: wsd stable segments cut in 2 (the first from step 0, the second from a branch state),
    a cosine dense continuation and an upcycled MoE in 3; each run's checkpoint, record and metrics and each
    branch state equal the bytes written when every job runs in one piece."""
    mini = overlay(tmp_path, "mini.yaml", MINI)
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_snakemake(REPO, whole, "--configfile", str(TINY), str(mini), "--cores", "2", *TARGETS)
    run_snakemake(
        REPO, split, "--configfile", str(TINY), str(mini), str(overlay(tmp_path, "s.yaml", SPLIT)), "--cores", "2",
        *TARGETS,
    )  # fmt: skip
    parts = sorted(p.relative_to(split / "results/parts").as_posix() for p in (split / "results/parts").rglob("*.pt"))
    assert parts == [
        "dense_cont/xs/d1_16K/d2_16K/p_10.pt",
        "dense_cont/xs/d1_16K/d2_16K/p_20.pt",
        "moe/xs/d1_16K/e4k2/d2_16K/p_10.pt",
        "moe/xs/d1_16K/e4k2/d2_16K/p_20.pt",
        "stable/dense/xs/b_25/p_12.pt",
        "stable/dense/xs/b_50/p_37.pt",
    ]
    products = sorted(
        p.relative_to(whole).as_posix()
        for p in (whole / "results").rglob("*")
        if p.is_file() and "/data/" not in p.as_posix()
    )
    assert len([p for p in products if p.endswith("model.safetensors")]) == 5  # 4 runs and the upcycled init
    assert len([p for p in products if p.startswith("results/stable/")]) == 2
    for name in products:
        assert (whole / name).read_bytes() == (split / name).read_bytes(), name
