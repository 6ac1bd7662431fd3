"""python -m stages.all_findings: every study's findings stacked with its study name, bad tables in one line."""

from __future__ import annotations

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
