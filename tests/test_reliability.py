"""Reliability of the whole workflow: kill-and-resume, byte-identical reruns, rerun triggers, lost-nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_snakemake, snakemake_cmd

pytestmark = pytest.mark.slow

COMPARED = [
    "tables/runs.csv",
    "tables/runs.parquet",
    "fits/fit_params.csv",
    "fits/fit_params.md",
    "tables/plan.csv",
    *(
        f"fits/{name}.json"
        for name in (
            "dense_chinchilla",
            "scratch_chinchilla",
            "upcycled",
            "upcycled_heldout",
            "upcycled_no_interaction",
            "upcycled_additive",
        )
    ),
    *(
        f"figures/{name}.{ext}"
        for name in ("loss_vs_d2", "alpha_eff", "loss_vs_compute", "threshold", "predicted_vs_observed", "residuals")
        for ext in ("png", "pdf")
    ),
]


def tiny(repo: Path) -> list[str]:
    return ["--configfile", str(repo / "config" / "tiny.yaml")]


def test_killed_workflow_resumes_to_byte_identical_outputs(repo_copy, tiny_run, tmp_path):
    """SIGKILL the whole workflow mid-way (as a node failure would), unlock, rerun: same bytes as a clean run."""
    proc = subprocess.Popen(
        snakemake_cmd(repo_copy, tmp_path, *tiny(repo_copy), "--cores", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((tmp_path / "results").glob("eval/**/eval.json"))) >= 4:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the workflow finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "results" / "tables" / "runs.csv").exists()
    run_snakemake(repo_copy, tmp_path, "--unlock", *tiny(repo_copy))
    run_snakemake(repo_copy, tmp_path, *tiny(repo_copy), "--cores", "2")  # the profile sets rerun-incomplete
    for name in COMPARED:
        assert (tmp_path / "results" / name).read_bytes() == (tiny_run / "results" / name).read_bytes(), name
    for run_dir in (tmp_path / "results").glob("dense/*/*"):
        reference = tiny_run / "results" / run_dir.relative_to(tmp_path / "results")
        assert (run_dir / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()


def edited(path: Path):
    """Context: append a comment to a module (a real code change), restore it afterwards."""

    class _Edit:
        def __enter__(self):
            self.original = path.read_bytes()
            path.write_bytes(self.original + b"\n# an edit\n")

        def __exit__(self, *exc):
            path.write_bytes(self.original)

    return _Edit()


def planned(repo: Path, workdir: Path) -> dict[str, int]:
    from test_workflow import job_counts

    out = run_snakemake(repo, workdir, *tiny(repo), "-n").stdout
    if "Nothing to be done" in out:
        return {}
    counts = job_counts(out)
    counts.pop("total")
    counts.pop("all", None)
    return counts


def test_editing_a_module_reruns_exactly_the_stages_that_import_it(repo_copy, tiny_run):
    stages = repo_copy / "stages"
    with edited(stages / "figures.py"):  # a stage command
        assert planned(repo_copy, tiny_run) == {"figures": 7}
    with edited(stages / "tables.py"):
        assert planned(repo_copy, tiny_run) == {"fit_table": 1}
    with edited(stages / "report" / "plots" / "common.py"):  # a library module only the figures command imports
        assert planned(repo_copy, tiny_run) == {"figures": 7}
    with edited(stages / "laws" / "bootstrap.py"):  # only the fitter: the fits rerun, then what reads them
        assert planned(repo_copy, tiny_run) == {"fit": 6, "figures": 5, "fit_table": 1, "plan": 1, "findings": 1}
    with edited(stages / "laws" / "forms.py"):  # imported by fit, figures, tables and the planner
        assert planned(repo_copy, tiny_run) == {"fit": 6, "figures": 7, "fit_table": 1, "plan": 1, "findings": 1}
    with edited(stages / "report" / "claims.py"):  # the findings table alone
        assert planned(repo_copy, tiny_run) == {"findings": 1}
    with edited(stages / "training" / "evaluation.py"):  # evaluate, surgery's step-0 loss, periodic validation
        counts = planned(repo_copy, tiny_run)
        assert counts["evaluate"] == 25 and counts["upcycle"] == 3 and counts["dense"] == 9 and "data" not in counts
    with edited(stages / "surgery" / "upcycling.py"):  # only the surgery, then what trains and reads from it
        counts = planned(repo_copy, tiny_run)
        assert counts["upcycle"] == 3 and counts["moe"] == 9 and "dense" not in counts and "scratch" not in counts
    with edited(stages / "model" / "moe.py"):
        counts = planned(repo_copy, tiny_run)
        assert {"dense", "upcycle", "moe", "scratch", "dense_cont", "evaluate", "collect"} <= set(counts)
        assert "data" not in counts
    (stages / "train.py").touch()  # a touch is not a change
    (stages / "training" / "loop.py").touch()
    assert planned(repo_copy, tiny_run) == {}


def test_failed_job_names_the_file_and_keeps_other_results(repo_copy, tiny_run, tmp_path):
    """A corrupt checkpoint makes its consumer exit 2 with one line; nothing else is deleted."""
    import shutil

    work = tmp_path / "copy"
    shutil.copytree(tiny_run, work, symlinks=True)
    before = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()}
    weights = work / "results" / "dense" / "xs" / "d1_16K" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    res = run_snakemake(
        repo_copy, work, *tiny(repo_copy), "--cores", "1", "-R", "upcycle", "--allowed-rules", "upcycle", check=False
    )
    assert res.returncode != 0
    log = (work / "logs" / "upcycled" / "xs" / "d1_16K" / "e4k2.log").read_text().strip().splitlines()
    assert "model.safetensors" in log[-1] and "sha256" in log[-1] and "Traceback" not in "\n".join(log)
    after = {p for p in (work / "results").rglob("*") if p.is_file()}
    lost = {p for p in before if p not in after and "upcycled/xs/d1_16K" not in str(p)}
    assert not lost, sorted(map(str, lost))[:5]


WSD_OVERLAY = """
# the tiny grid as the default grid trains it: one stable run per family, a cooldown per budget, a replica
train: {lr_policy: wsd, dense_cont_lr_policy: wsd, warmup_steps: 4}
moe: {e4k2: {experts: 4, top_k: 2, norm_topk_prob: true, method: naive, lr_policy: wsd}}
grid: {replicas: {runs: [dense/xs/d1_32K]}}
"""


def test_wsd_dag_reruns_to_byte_identical_outputs(repo_copy, tmp_path):
    """The default grid's DAG shape (stable segments, cooldowns, replicas) run twice from scratch: same bytes."""
    overlay = tmp_path / "wsd.yaml"
    overlay.write_text(WSD_OVERLAY)
    args = [*tiny(repo_copy), str(overlay), "--cores", "2"]  # one --configfile flag: a second would replace it
    first, second = tmp_path / "a", tmp_path / "b"
    for workdir in (first, second):
        workdir.mkdir()
        run_snakemake(repo_copy, workdir, *args)
    assert list((first / "results" / "stable").rglob("b_*.pt")), "no stable segments: not the wsd DAG"
    compared = [*COMPARED, "tables/findings.csv"]
    for name in compared:
        a, b = first / "results" / name, second / "results" / name
        assert a.read_bytes() == b.read_bytes(), name
    runs = (first / "results" / "tables" / "runs.csv").read_text()
    assert "dense/xs@2/d1_32K" in runs  # the replica trained and was collected
