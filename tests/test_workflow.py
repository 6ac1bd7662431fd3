"""Workflow tests through the real Snakemake CLI: dry-run job counts, the SLURM profile, a tiny real run."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_snakemake

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_default_config_dry_run_lists_every_stage(tmp_path):
    counts = job_counts(snakemake(tmp_path, "-n").stdout)
    assert counts == {
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "stable": 61,
        "dense": 15,
        "scratch": 15,
        "evaluate": 61,
        "upcycle": 6,
        "dense_cont": 12,
        "moe": 19,
        "collect": 1,
        "figures": 7,
        "fit": 7,
        "findings": 1,
        "fit_table": 1,
        "plan": 1,
        "all": 1,
        "total": 214,
    }
    assert not (tmp_path / "results").exists()


SHIPPED_GRIDS = {
    "paper": {  # 4 dense sizes x 4 D1, wsd: one stable run per family (python -m stages.ledger counts the same)
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "stable": 76,
        "stable_part": 4,  # the longest runs in walltime parts (24-hour limit at MFU 0.35 on one H100)
        "dense": 16,
        "dense_part": 1,
        "scratch": 12,
        "evaluate": 76,
        "upcycle": 12,
        "dense_cont": 12,
        "moe": 36,
        "collect": 1,
        "figures": 7,
        "fit": 7,
        "findings": 1,
        "fit_table": 1,
        "plan": 1,
        "all": 1,
        "total": 270,
    },
    "cosine": {  # the default grid as independent cosine runs (the wsd baseline)
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "dense": 15,
        "scratch": 15,
        "dense_cont": 12,
        "evaluate": 61,
        "upcycle": 6,
        "moe": 19,
        "collect": 1,
        "figures": 7,
        "fit": 7,
        "findings": 1,
        "fit_table": 1,
        "plan": 1,
        "all": 1,
        "total": 153,
    },
    "study": {  # the 90-minute study: longer D, two upcycled sizes, lr policies, Drop-Upcycling, 6 replicas
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "stable": 97,
        "dense": 23,
        "scratch": 19,
        "evaluate": 99,
        "upcycle": 12,
        "dense_cont": 11,
        "moe": 46,
        "collect": 1,
        "figures": 7,
        "fit": 8,
        "findings": 1,
        "fit_table": 1,
        "plan": 1,
        "all": 1,
        "total": 333,
    },
    "methods": {
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "dense": 1,
        "dense_cont": 1,
        "evaluate": 23,
        "upcycle": 21,
        "moe": 21,
        "collect": 1,
        "figures": 1,
        "findings": 1,
        "all": 1,
        "total": 77,
    },
    "sparsity": {  # 2 seeds of everything: 4 dense, 20 upcycled (6 variants on xs and s, 4 on m, 4 on s at
        # 3.2M), 6 scratch on s, 4 dense continued per seed
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "dense": 8,
        "scratch": 12,
        "dense_cont": 8,
        "evaluate": 68,
        "upcycle": 32,
        "moe": 40,
        "collect": 1,
        "fit": 4,
        "figures": 4,
        "findings": 1,
        "fit_table": 1,
        "all": 1,
        "total": 186,
    },
    "interaction": {
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "stable": 30,
        "dense": 6,
        "evaluate": 30,
        "upcycle": 6,
        "moe": 24,
        "collect": 1,
        "fit": 4,
        "figures": 4,
        "findings": 1,
        "fit_table": 1,
        "all": 1,
        "total": 114,
    },
    "warmstart": {  # 4 growth variants x 2 D1 x 4 D2, l from scratch at 5 budgets
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "stable": 39,
        "dense": 7,
        "evaluate": 39,
        "grow": 8,
        "grown": 32,
        "collect": 1,
        "figures": 2,
        "fit": 3,
        "findings": 1,
        "fit_table": 1,
        "all": 1,
        "total": 140,
    },
    "mup": {
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "lr_sweep": 30,
        "evaluate": 30,
        "collect": 1,
        "figures": 1,
        "findings": 1,
        "all": 1,
        "total": 70,
    },
    "expert_upcycling": {  # e4k2 from scratch expanded to 8 (2 D1) and 16 experts (1 D1) x 3 D2; 4 replicated cells
        "data_tokenizer": 1,
        "data_shard": 4,  # data.shards
        "data": 1,
        "stable": 49,
        "dense": 2,
        "scratch": 18,
        "evaluate": 49,
        "expand_moe": 8,
        "expanded": 20,
        "upcycle": 3,
        "moe": 9,
        "collect": 1,
        "figures": 2,
        "fit": 2,
        "findings": 1,
        "fit_table": 1,
        "plan": 1,
        "all": 1,
        "total": 173,
    },
}
SHIPPED_GRIDS["warmstart_mup"] = SHIPPED_GRIDS["warmstart"]  # the same grid under muP


@pytest.mark.parametrize("grid", sorted(SHIPPED_GRIDS))
def test_every_shipped_grid_validates_and_plans(grid, tmp_path):
    """config/<grid>.yaml overlays the default config; its DAG has exactly the jobs its comment promises."""
    counts = job_counts(snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / f"{grid}.yaml")).stdout)
    assert counts == SHIPPED_GRIDS[grid]


def test_paper_grid_on_the_slurm_profile_trains_on_gpus(tmp_path):
    res = snakemake(
        tmp_path,
        "-n",
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--configfile",
        str(REPO / "config" / "paper.yaml"),
    )
    train = re.search(r"rule moe:[\s\S]*?resources: ([^\n]*)\nShell command: ([^\n]*)", res.stdout)
    assert train, res.stdout[-2000:]
    assert "slurm_partition=gpu" in train[1] and "gpu=1" in train[1]
    assert '"device":"cuda"' in train[2] and '"dtype":"bf16"' in train[2]


def test_paper_grid_with_the_nanotron_backend_dry_runs_on_the_slurm_profile_with_the_papers_moe(tmp_path):
    res = snakemake(
        tmp_path,
        "-n",
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--configfile",
        str(REPO / "config" / "paper.yaml"),
        str(REPO / "config" / "paper_nanotron.yaml"),
    )
    train = re.search(r"rule moe:[\s\S]*?resources: ([^\n]*)\nShell command: ([^\n]*)", res.stdout)
    assert train, res.stdout[-2000:]
    assert "slurm_partition=gpu" in train[1] and "gpu=1" in train[1]
    assert '"backend":"nanotron"' in train[2] and '"device":"cuda"' in train[2]
    assert "paper_nanotron/" in train[2]
    moe = re.search(r"rule upcycle:[\s\S]*?Shell command: ([^\n]*)", res.stdout)
    assert moe and '"norm_topk_prob":true' in moe[1] and '"aux_loss_coef":0.01' in moe[1], res.stdout[-2000:]


def test_slurm_profile_dry_run_requests_gpus_for_training(tmp_path):
    res = snakemake(tmp_path, "-n", "--profile", str(REPO / "profiles" / "slurm"))
    train = re.search(r"rule moe:[\s\S]*?resources: ([^\n]*)", res.stdout)
    assert train and "slurm_partition=gpu" in train[1] and "gpu=1" in train[1], res.stdout[-2000:]


def test_bad_config_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 0.1\n")
    res = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert res.returncode == 2
    assert "config key 'train.lrr': unknown key" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_tiny_grid_end_to_end(tiny_run, repo_copy):
    results = tiny_run / "results"
    runs = pd.read_csv(results / "tables" / "runs.csv")
    assert set(runs["kind"]) == {"dense", "upcycled", "scratch_moe", "dense_cont"}
    assert runs["val_loss"].map(math.isfinite).all() and (runs["val_loss"] > 0).all()
    up = runs[runs["kind"] == "upcycled"]
    assert (up["flops_total"] > up["flops_run"]).all()  # sunk dense compute is counted
    assert (up["N_total"] > up["N_active"]).all() and (up["N_dense"] < up["N_active"]).all()
    parquet = pd.read_parquet(results / "tables" / "runs.parquet")
    assert list(parquet.columns) == list(runs.columns) and parquet["val_loss"].tolist() == runs["val_loss"].tolist()
    for name in (
        "dense_chinchilla",
        "scratch_chinchilla",
        "upcycled",
        "upcycled_heldout",
        "upcycled_no_interaction",
        "upcycled_additive",
    ):
        fit = json.loads((results / "fits" / f"{name}.json").read_text())
        assert all(v is not None and math.isfinite(v) for v in fit["params"].values()), (name, fit["params"])
    assert json.loads((results / "fits" / "upcycled_heldout.json").read_text())["holdout"]["n"] == 1
    table = pd.read_csv(results / "fits" / "fit_params.csv")
    assert len(table) == 6 and table["holdout_rmse_log"].notna().sum() == 3
    plan = pd.read_csv(results / "tables" / "plan.csv")
    assert {"upcycle", "scratch_same_tokens", "scratch_same_compute", "dense_continued"} <= set(plan["option"])
    for fig in (
        "loss_vs_d2",
        "alpha_eff",
        "loss_vs_compute",
        "threshold",
        "predicted_vs_observed",
        "residuals",
        "training_curves",
    ):
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    for surgery in results.glob("upcycled/*/*/*/surgery.json"):  # naive + renormalised routing: exact
        assert abs(json.loads(surgery.read_text())["delta_val_loss"]) < 1e-4
    tiny = str(repo_copy / "config" / "tiny.yaml")
    assert "Nothing to be done" in run_snakemake(repo_copy, tiny_run, "--configfile", tiny, "-n").stdout
    report = tiny_run / "report.html"
    run_snakemake(repo_copy, tiny_run, "--configfile", tiny, "--report", str(report))
    assert report.stat().st_size > 10_000 and b"sunk" in report.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-R", "fit"], {"fit": 6, "figures": 5, "fit_table": 1, "plan": 1, "findings": 1}),  # two figures draw no fit
        (["-R", "figures"], {"figures": 7}),
        (
            ["-R", "collect", "--allowed-rules", "collect", "fit", "figures", "fit_table", "plan"],
            {"collect": 1, "fit": 6, "figures": 7, "fit_table": 1, "plan": 1},
        ),
        (
            ["-R", "results/dense/xs/d1_16K/model.safetensors", "-U", "evaluate"],
            {"dense": 1, "upcycle": 1, "moe": 3, "evaluate": 4},
        ),
        (["results/moe/xs/d1_32K/e4k2/d2_16K/model.safetensors", "-R", "moe"], {"moe": 1}),
    ],
)
def test_partial_reruns_schedule_exactly_what_the_readme_says(tiny_run, repo_copy, args, expected):
    res = run_snakemake(repo_copy, tiny_run, "--configfile", str(repo_copy / "config" / "tiny.yaml"), "-n", *args)
    counts = job_counts(res.stdout)
    counts.pop("total")
    counts.pop("all", None)
    assert counts == expected


# ----- the SLURM profile with a site's settings (stages.workflow.cluster), and devices this machine lacks -----

H100_SITE = """site:
  account: MYACCOUNT
  gpu_partition: h100
  gpu_type: h100
  gpu_constraint: nvlink
  qos: high
  max_runtime: 720
cluster:
  moe: {gpu_type: a100}
"""


def job_resources_of(stdout: str) -> dict[str, dict[str, str]]:
    """The resources of the first job of every rule in a dry run's listing, as text."""
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: ([^\n]*)", stdout, re.M):
        out.setdefault(m[1], dict(kv.split("=", 1) for kv in m[2].split(", ")))
    return out


def test_site_settings_add_to_the_slurm_profiles_numbers_of_every_job(tmp_path):
    """The README's cluster command, with the site's account, H100 partition, GPU model, constraint, QoS and time
    cap: every job keeps its partition, memory, time limit and CPUs (before, `--default-resources` on the command
    line replaced the profile's and `collect` kept only the account), and a training rule asks for its own GPU."""
    site = tmp_path / "site.yaml"
    site.write_text(H100_SITE)
    res = snakemake(
        tmp_path,
        *("-n", "--profile", str(REPO / "profiles" / "slurm"), "--default-resources", "slurm_account=OLD"),
        *("--configfile", str(REPO / "config" / "paper.yaml"), str(site)),
    )
    jobs = job_resources_of(res.stdout)
    assert {"collect", "data", "dense", "stable", "moe", "evaluate", "fit", "upcycle"} <= set(jobs)
    for rule, r in jobs.items():
        if rule in ("all", "paper"):
            continue
        assert {"slurm_partition", "mem_mb", "runtime", "cpus_per_task"} <= set(r), (rule, r)
        assert r["slurm_account"] == "MYACCOUNT" and r["qos"] == "high", (rule, r)
        assert int(r["runtime"]) <= 720, (rule, r)
    assert {k: jobs["collect"][k] for k in ("slurm_partition", "mem_mb", "runtime")} == {
        "slurm_partition": "cpu",
        "mem_mb": "4000",
        "runtime": "30",
    }
    for rule in ("dense", "stable", "moe", "scratch", "dense_cont", "evaluate"):
        r = jobs[rule]
        assert (r["slurm_partition"], r["gpu"], r["constraint"]) == ("h100", "1", "nvlink"), (rule, r)
        assert r["gpu_model"] == ("a100" if rule == "moe" else "h100"), (rule, r)  # cluster.moe.gpu_type
    assert (jobs["dense"]["mem_mb"], jobs["dense"]["runtime"], jobs["dense"]["cpus_per_task"]) == ("64000", "720", "8")
    assert "constraint" not in jobs["data"] and "gpu" not in jobs["data"]


def test_the_executor_renders_a_site_configured_job_as_sbatch_flags(tmp_path):
    """What snakemake-executor-plugin-slurm would submit for the resources of the dry run above (its own
    get_submit_command and set_gres_string), without a cluster."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    site = tmp_path / "site.yaml"
    site.write_text(H100_SITE)
    profile = str(REPO / "profiles" / "slurm")
    res = snakemake(
        tmp_path, "-n", "--profile", profile, "--configfile", str(REPO / "config" / "paper.yaml"), str(site)
    )
    jobs = job_resources_of(res.stdout)

    def sbatch(rule: str) -> str:
        r = Resources({k: int(v) if v.isdigit() else v for k, v in jobs[rule].items()})
        job = SimpleNamespace(resources=r, threads=1)
        params = {
            "run_uuid": "u",
            "slurm_logfile": "l",
            "comment_str": "c",
            "workdir": "",
            "account": "",
            "partition": "",
        }
        return get_submit_command(job, params) + set_gres_string(job)

    dense = sbatch("dense")
    for flag in ("-t 720", "-C nvlink", "--qos=high", "--mem 64000", "--cpus-per-task=8", "--gpus=h100:1"):
        assert flag in dense, dense
    assert "--gpus=a100:1" in sbatch("moe")
    collect = sbatch("collect")
    assert "-t 30" in collect and "--mem 4000" in collect and "--gpus" not in collect and "-C" not in collect


def test_gpu_models_reach_several_task_jobs_and_gres_clusters():
    """The multi-task form (--gpus-per-node in slurm_extra, with site.gpu_extra), and site.gpu_request gres."""
    from stages.workflow.cluster import rule_resources

    cfg = {
        "train": {"threads": 2},
        "cluster": {"dense": {"nodes": 2, "tasks": 4, "gpu_type": "h100"}},
        "site": {"gpu_extra": "--exclusive", "max_runtime": 600},
    }
    dense = rule_resources(cfg, "dense")
    assert dense["slurm_extra"] == "--ntasks-per-node=2 --gpus-per-node=h100:2 --exclusive"
    assert (dense["nodes"], dense["tasks"], dense["runtime"], dense["slurm_partition"]) == (2, 4, 600, "gpu")
    gres = rule_resources({**cfg, "site": {"gpu_request": "gres", "gpu_type": "h100"}}, "dense")
    assert (gres["gres"], gres["tasks_per_gpu"], gres["slurm_extra"]) == ("gpu:h100:2", 0, "--ntasks-per-node=2")
    single = rule_resources({**cfg, "site": {"gpu_request": "gres", "gpu_type": "h100"}}, "evaluate")
    assert single["gres"] == "gpu:h100:1" and "gpu" not in single
    assert rule_resources(cfg, "collect") == {
        "cpus_per_task": 2,
        "mem_mb": 4000,
        "runtime": 30,
        "slurm_partition": "cpu",
    }


@pytest.mark.parametrize(
    ("site", "message"),
    [
        ("site: {gpu_extra: '--exclusive --partition=big'}", "config key 'site.gpu_extra': --partition is set by"),
        ("site: {acount: X}", "config key 'site.acount': unknown key"),
        ("cluster: {moe: {gpu_type: 'h100:2'}}", "config key 'cluster.moe.gpu_type': 'h100:2' is not valid"),
    ],
)
def test_a_bad_site_setting_is_one_line_exit_2(tmp_path, site, message):
    bad = tmp_path / "site.yaml"
    bad.write_text(site + "\n")
    res = snakemake(
        tmp_path, "-n", "--profile", str(REPO / "profiles" / "slurm"), "--configfile", str(bad), check=False
    )
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]


def test_training_on_a_device_this_machine_lacks_is_refused_before_the_first_job(tmp_path):
    """train.device cuda on a machine without CUDA, jobs run here (not through the SLURM executor): one line naming
    the key before the data job runs, not an error at the first training job after data and surgery ran. A dry run
    (and a run on the cluster profile, tested above) plans as before."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nothing to refuse")
    overlay = tmp_path / "cuda.yaml"
    overlay.write_text("train:\n  device: cuda\n")
    args = ["--configfile", str(REPO / "config" / "tiny.yaml"), str(overlay)]
    res = snakemake(tmp_path, "--cores", "1", *args, check=False)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: config key 'train.device': cuda, but torch sees no CUDA device on this machine, where the training "
        "jobs would run; run them on a GPU cluster (--profile profiles/slurm) or set train.device: cpu or auto"
    ]
    assert "Traceback" not in res.stderr and not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()
    assert "dense" in job_counts(snakemake(tmp_path, "-n", *args).stdout)
