"""python -m stages.all_findings: every study's findings stacked with its study name, bad tables in one line."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from stages.all_findings import main
from stages.core.cli import UserError
from stages.report.verdicts import COLUMNS, collect

FINDINGS = """finding,claim,source,measured,interval,verdict,evidence
seed_noise,noise is small,this study,sigma 0.03,,reproduced,3 cells
more_experts,more experts help,He et al.,0 of 3 fall,,contradicted,"E 2..16"
"""


def test_studies_are_stacked_in_name_order_with_the_default_first(tmp_path):
    results = tmp_path / "results"
    for study in ("", "warmstart", "sparsity"):
        (results / study / "tables").mkdir(parents=True, exist_ok=True)
        (results / study / "tables" / "findings.csv").write_text(FINDINGS)
    table = collect(results)
    assert list(table.columns) == COLUMNS
    assert table["study"].tolist() == ["default"] * 2 + ["sparsity"] * 2 + ["warmstart"] * 2
    assert table.loc[1, "verdict"] == "contradicted" and table.loc[0, "interval"] == ""
    main(["--results", str(results), "--out", str(tmp_path / "all")])
    assert pd.read_csv(tmp_path / "all.csv", keep_default_na=False).equals(table)
    assert (tmp_path / "all.md").read_text().splitlines()[0] == "| " + " | ".join(COLUMNS) + " |"


def test_no_study_and_a_foreign_table_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no study has a tables/findings.csv"):
        collect(tmp_path)
    (tmp_path / "x" / "tables").mkdir(parents=True)
    (tmp_path / "x" / "tables" / "findings.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match=r"x/tables/findings.csv: missing columns \['finding'"):
        collect(tmp_path)


def test_effect_seeds_commit_and_machine_come_from_the_study(tmp_path):
    """The paired columns pass through; commit and machine are what the study's run records hold."""
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    paired = "finding,claim,source,measured,effect,interval,seeds,verdict,evidence\n"
    paired += 'upcycle_vs_dense_cont,c,s,m,+0.1000,"paired 95% t [+0.05, +0.15]",3,contradicted,e\n'
    (results / "tables" / "findings.csv").write_text(paired)
    run = results / "dense" / "s" / "d1_400K"
    run.mkdir(parents=True)
    record = {"code_hash": "abc123", "steps": 10, "torch_version": "2.13.0+cpu", "threads": 1}
    (run / "provenance.json").write_text(json.dumps(record))
    stale = results / "dense" / "s@2" / "d1_400K"  # a run of an earlier grid, not in runs.csv: not counted
    stale.mkdir(parents=True)
    (stale / "provenance.json").write_text(json.dumps({**record, "torch_version": "1.0"}))
    (results / "tables" / "runs.csv").write_text("run_id,kind\ndense/s/d1_400K,dense\n")
    (results / "old" / "tables").mkdir(parents=True)
    (results / "old" / "tables" / "findings.csv").write_text(FINDINGS)  # written before effect and seeds
    table = collect(results).set_index("study")
    assert {"effect", "interval", "seeds", "verdict", "commit", "machine"} <= set(table.columns)
    default = table.loc["default"]
    assert (default["effect"], default["seeds"], default["verdict"]) == ("+0.1000", "3", "contradicted")
    assert default["commit"] == "not recorded; train code abc123"
    assert default["machine"] == "host and CPU not recorded; torch 2.13.0+cpu; 1 thread(s) per job"
    old = table.loc["old"]
    assert (old["effect"] == "").all() and (old["machine"] == "not recorded").all()  # its runs are elsewhere


def test_commit_and_machine_are_the_recorded_ones_with_older_records_counted(tmp_path):
    """Records that name their machine give the git commit and the CPU with its kernel path; a study mixing them
    with older records says how many name none and keeps the code hash beside the commit."""
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "findings.csv").write_text(FINDINGS)
    machine = {"commit": "0123456789ab", "cpu": "AMD EPYC", "kernels": "AVX512", "gpu": ""}
    base = {"code_hash": "abc123", "steps": 10, "torch_version": "2.13.0+cpu", "threads": 1}
    gpu = {**machine, "gpu": "H100"}
    for run, record in {"a": {**base, "machine": machine}, "b": {**base, "machine": gpu}}.items():
        (results / run).mkdir()
        (results / run / "provenance.json").write_text(json.dumps(record))
    row = collect(results).iloc[0]
    assert row["commit"] == "0123456789ab"
    assert row["machine"] == (
        "AMD EPYC, AVX512 kernels; AMD EPYC, AVX512 kernels, H100; torch 2.13.0+cpu; 1 thread(s) per job"
    )
    (results / "c").mkdir()
    (results / "c" / "provenance.json").write_text(json.dumps(base))
    row = collect(results).iloc[0]
    assert row["commit"] == "0123456789ab; train code abc123"
    assert row["machine"].endswith("; 1 of 3 records name no machine")
