"""python -m stages.docs: generated blocks rebuilt from a study's files, prose and unsourced blocks kept."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from stages.core.cli import UserError
from stages.docs import main
from stages.report.generated import BLOCK, Block, Origin, regenerate

ORIGIN = Origin(commit="abc123", machine="2 cores, test")
RUNS = """run_id,kind,model,moe,D1,D2,D,N_active,sparsity,val_loss,replica
dense/m/d1_200K,dense,m,,,,200000,295000,1,4.8384,1
dense/s/d1_200K,dense,s,,,,200000,131000,1,5.0002,1
dense/s/d1_400K,dense,s,,,,400000,131000,1,4.567,1
dense/s@2/d1_400K,dense,s,,,,400000,131000,1,4.504,2
dense/xs/d1_400K,dense,xs,,,,400000,74000,1,4.6292,1
moe/s/d1_100K/e8k2/d2_100K,upcycled,s,e8k2,100000,100000,100000,231000,3.55,5.0481,1
moe/s/d1_100K/e8k2/d2_1.6M,upcycled,s,e8k2,100000,1600000,1600000,231000,3.55,3.8657,1
"""
FINDINGS = """finding,claim,source,measured,interval,verdict,evidence
wsd_cost,one stable run | cooldowns,Hägele et al.,0.639,,reproduced,tokens
dense_power_law,E > 0,Hoffmann et al.,alpha 0.053,"(0.040, 0.075)",not at this scale,14 runs
"""
FIT = {
    "law": "upcycled",
    "n_points": 14,
    "params": {"A": 19.97, "alpha3": 0.0242},
    "bootstrap": {"ci95": {"A": [10.0, 40.0], "alpha3": [0.0167, 0.037]}},
    "diagnostics": {"bounds": {"A": {"bound": None}, "alpha3": {"bound": None}}, "summary": "ok"},
    "fit": {"mean_abs_rel_err": 0.0047},
    "holdout": {"n": 5, "query": "D2 > 4e5", "mean_abs_rel_err": 0.0068},
}
PAGE = """# Results

Prose before.

<!-- generated: grid results/tables/runs.csv rows=model cols=D where="kind == 'dense'" order=N_active spread=1 -->
typed 4.5356
<!-- end generated -->

<!-- generated: table results/tables/findings.csv columns=finding,claim,verdict -->
<!-- end generated -->

<!-- generated: fit results/fits/upcycled.json -->
<!-- end generated -->

<!-- generated: table results/sparsity/tables/runs.csv -->
typed numbers of another study
<!-- end generated -->
Prose after.
"""


@pytest.fixture
def study(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    (results / "fits").mkdir()
    (results / "tables" / "runs.csv").write_text(RUNS)
    (results / "tables" / "findings.csv").write_text(FINDINGS)
    (results / "fits" / "upcycled.json").write_text(json.dumps(FIT))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text(PAGE)
    return tmp_path


def test_blocks_are_rebuilt_from_their_sources_and_the_rest_is_kept(study):
    update = regenerate(PAGE, study / "results", ORIGIN)
    text = update.text
    assert text.startswith("# Results\n\nProse before.\n") and text.endswith("<!-- end generated -->\nProse after.\n")
    assert "typed 4.5356" not in text
    assert "typed numbers of another study" in text  # no source: the typed numbers stay
    assert update.kept == ("results/sparsity/tables/runs.csv",)
    assert len(update.generated) == 3
    assert text.count("(commit abc123, 2 cores, test)") == 3
    assert "| model \\ D | 200K | 400K |" in text
    # rows by size (order=N_active), the replicated cell is the mean of its seeds with their range
    assert text.index("| xs |") < text.index("| s |") < text.index("| m |")
    assert "| s | 5.0002 | 4.5355 [4.5040, 4.5670] |" in text
    assert "| wsd_cost | one stable run \\| cooldowns | reproduced |" in text
    assert "| alpha3 | 0.0242 | [0.0167, 0.037] |  |" in text
    assert "law `upcycled`, 14 points" in text and "held out (D2 > 4e5): 5 points, mean |relative error| 0.68%" in text


def test_regeneration_is_deterministic_and_idempotent(study):
    once = regenerate(PAGE, study / "results", ORIGIN).text
    assert regenerate(PAGE, study / "results", ORIGIN).text == once
    assert regenerate(once, study / "results", ORIGIN).text == once


def test_grid_labels_tokens_and_empty_keys(study):
    text = regenerate(
        "<!-- generated: grid results/tables/runs.csv rows=moe cols=kind,model value=sparsity decimals=2 -->\n"
        "<!-- end generated -->\n",
        study / "results",
        ORIGIN,
    ).text
    assert "| moe \\ kind, model | dense m | dense s | dense xs | upcycled s |" in text
    assert "| - | 1.00 | 1.00 | 1.00 |  |" in text and "| e8k2 |  |  |  | 3.55 |" in text


def test_the_command_updates_pages_in_place_and_leaves_them_unchanged_on_a_rerun(study, monkeypatch, capsys):
    monkeypatch.chdir(study)
    args = ["--results", "results", "--out", "docs", "--commit", "abc123", "--machine", "2 cores, test"]
    main(args)
    page = study / "docs" / "results.md"
    first = page.read_bytes()
    assert b"(commit abc123, 2 cores, test)" in first
    assert "regenerated 3, kept 1 (missing: results/sparsity/tables/runs.csv)" in capsys.readouterr().out
    main(args)
    assert page.read_bytes() == first


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("chart results/tables/runs.csv", "unknown view 'chart'"),
        ("table results/tables/runs.csv colour=red", "'colour=red' is not an option of table"),
        ("grid results/tables/runs.csv rows=model", "needs rows= and cols="),
        ("table results/tables/runs.csv columns=nope", "no column(s) nope"),
        ("table", "expected '<view> <source>"),
    ],
)
def test_a_bad_block_is_one_line_naming_the_page(study, spec, message):
    with pytest.raises(UserError, match="^docs/x.md: ") as err:
        regenerate(f"<!-- generated: {spec} -->\n<!-- end generated -->\n", study / "results", ORIGIN, "docs/x.md")
    assert message in str(err.value)


def test_the_committed_pages_name_valid_views_and_study_files():
    blocks = [
        Block.parse(m["spec"], str(page))
        for page in sorted((REPO / "docs").glob("*.md"))
        for m in BLOCK.finditer(page.read_text(encoding="utf-8"))
    ]
    assert blocks, "docs/ has generated blocks"
    assert all(b.source.startswith("results/") for b in blocks)


def test_the_committed_pages_render_from_tables_with_the_studies_columns(tmp_path):
    """Every block of docs/ draws from the columns the study's runs, fit and plan tables really have."""
    from stages.laws.planner import COLUMNS as PLAN_COLUMNS
    from stages.report.fit_table import fit_row
    from stages.report.runs_table import COLUMNS as RUN_COLUMNS

    kinds = ("dense", "scratch_moe", "upcycled", "dense_cont", "grown", "lr_sweep")
    labels = {"model": "s", "moe": "e8k2", "growth": "w2_hc", "parametrization": "sp"}
    runs = pd.DataFrame(
        [{**dict.fromkeys(RUN_COLUMNS, 1.0), **labels, "run_id": f"{k}/s", "kind": k} for k in kinds],
        columns=RUN_COLUMNS,
    )
    plan = pd.DataFrame([dict.fromkeys(PLAN_COLUMNS, 1.0) | {"option": "upcycle"}], columns=list(PLAN_COLUMNS))
    fits = pd.DataFrame([fit_row("upcycled", FIT)])
    for study in (
        "",
        "methods",
        "sparsity",
        "warmstart",
        "warmstart_mup",
        "mup",
        "tiny",
        "tiny_nanotron",
        "expert_upcycling",
    ):
        root = tmp_path / "results" / study
        (root / "tables").mkdir(parents=True, exist_ok=True)
        (root / "fits").mkdir(exist_ok=True)
        runs.to_csv(root / "tables" / "runs.csv", index=False)
        plan.to_csv(root / "tables" / "plan.csv", index=False)
        fits.to_csv(root / "fits" / "fit_params.csv", index=False)
    for page in sorted((REPO / "docs").glob("*.md")):
        update = regenerate(page.read_text(encoding="utf-8"), tmp_path / "results", ORIGIN, str(page))
        assert all(source.endswith("findings.csv") for source in update.kept), (page, update.kept)


def test_compare_joins_two_studies_on_run_id_and_reports_the_largest_difference(study):
    other = study / "results" / "other" / "tables"
    other.mkdir(parents=True)
    frame = pd.read_csv(study / "results" / "tables" / "runs.csv")
    frame.loc[frame["run_id"] == "dense/s/d1_400K", "val_loss"] += 0.001
    frame.iloc[:-1].to_csv(other / "runs.csv", index=False)  # one run missing there: left out of the join
    spec = "compare results/tables/runs.csv against=results/other/tables/runs.csv with=kind labels=torch,nanotron"
    page = f"<!-- generated: {spec} -->\n<!-- end generated -->\n"
    text = regenerate(page, study / "results", ORIGIN).text
    assert "| run_id | kind | val_loss (torch) | val_loss (nanotron) | nanotron − torch |" in text
    assert "| dense/s/d1_400K | dense | 4.567 | 4.568 | +1.00e-03 |" in text
    assert "**max \\|nanotron − torch\\|** (6 runs)" in text and text.rstrip().endswith(
        "| 1.00e-03 |\n<!-- end generated -->"
    )
    missing = f"<!-- generated: {spec.replace('other', 'absent')} -->\ntyped\n<!-- end generated -->\n"
    assert regenerate(missing, study / "results", ORIGIN).kept == ("results/tables/runs.csv",)
    with pytest.raises(UserError, match="the compare view needs against"):
        regenerate("<!-- generated: compare results/tables/runs.csv -->\n<!-- end generated -->\n", study / "results",
                   ORIGIN)  # fmt: skip
