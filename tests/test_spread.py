"""The machine-to-machine spread of a study's headline numbers (stages.spread, stages.report.headlines)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from stages.core.cli import UserError
from stages.report.headlines import headlines, spread_table


def study(root: Path, losses: dict[str, float], alpha3: float, rel_errs: list[float], verdict: str, d2: str) -> Path:
    (root / "tables").mkdir(parents=True)
    (root / "fits").mkdir()
    pd.DataFrame({"run_id": list(losses), "val_loss": list(losses.values())}).to_csv(root / "tables/runs.csv")
    evidence = f"D1 99.84K: D2* {d2}; D1 199.7K: D2* 1.3M; D1 399.9K: D2* none; largest trained D2 1.6M"
    findings = pd.DataFrame(
        {"finding": ["upcycle_vs_scratch", "wsd_cost"], "verdict": [verdict, "reproduced"], "evidence": [evidence, ""]}
    )
    findings.to_csv(root / "tables/findings.csv", index=False)
    fit = {"params": {"alpha3": alpha3, "E": 1.0}, "holdout": {"rows": [{"rel_err": e} for e in rel_errs]}}
    (root / "fits/upcycled_heldout.json").write_text(json.dumps(fit))
    return root


def test_the_spread_lines_up_every_headline_and_marks_a_changed_verdict_fragile(tmp_path):
    a = study(tmp_path / "a", {"r1": 4.0, "r2": 3.5}, 0.024, [0.01, -0.0156], "not at this scale", "981.8K")
    b = study(tmp_path / "b", {"r1": 4.02, "r2": 3.49}, 0.030, [0.02, -0.0201], "reproduced", "1.2M")
    table = spread_table(headlines(a), headlines(b)).set_index("quantity")
    assert table.loc["val_loss, largest |difference| (r1)", "difference"] == pytest.approx(0.02)
    assert table.loc["val_loss, mean |difference| over 2 runs", "difference"] == pytest.approx(0.015)
    assert table.loc["upcycled_heldout.alpha3", "relative"] == pytest.approx(0.25)
    assert table.loc["upcycled_heldout: held-out max |rel err|", "other"] == pytest.approx(0.0201)
    assert table.loc["D2* at D1 = 99,840", "reference"] == 981_800 and table.loc["D2* at D1 = 99,840", "other"] == 1.2e6
    assert table.loc["D2* at D1 = 399,900", "note"] == ""  # none on both sides
    assert table.loc["verdict upcycle_vs_scratch", "note"].startswith("fragile")
    assert table.loc["verdict wsd_cost", "note"] == "same"


def test_the_command_writes_both_tables_and_a_missing_study_is_one_line(tmp_path):
    a = study(tmp_path / "a", {"r1": 4.0}, 0.024, [0.01], "reproduced", "1M")
    out = tmp_path / "spread"
    cmd = [sys.executable, "-m", "stages.spread", "--results", str(a), "--against", str(a), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "0 fragile" in res.stdout and out.with_suffix(".md").read_text().startswith("| quantity |")
    cmd[6] = str(tmp_path / "nope")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "nope/tables/runs.csv" in res.stderr
    with pytest.raises(UserError):
        headlines(tmp_path / "nope")
