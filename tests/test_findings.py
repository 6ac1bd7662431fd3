"""The findings table: seed noise from replicas, verdicts that follow the numbers, the command end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.report import claims as F
from stages.report import paired as P

REPO = Path(__file__).resolve().parents[1]


def _runs(noise: float = 0.0, bump: float = 0.0) -> pd.DataFrame:
    """A grid whose losses follow L = 2 + 5 D^-0.3 (+ size term), with one replicated cell per kind."""
    rows = []
    for model, n in (("s", 1e5), ("m", 3e5)):
        for d in (1e5, 2e5, 4e5):
            loss = 2 + 50 * n**-0.3 + 5 * d**-0.1
            rows.append(dict(run_id=f"dense/{model}/d1_{d:g}", kind="dense", model=model, moe="", D=d, D1=d, D2=0.0))
            rows[-1].update(N_active=n, N_dense=n, val_loss=loss, replica=1, flops_total=6 * n * d)
    for d1 in (1e5, 4e5):
        for d2 in (1e5, 2e5, 4e5):
            loss = 2 + 5 * d1**-0.1 * d2**-0.05
            rows.append(dict(run_id=f"moe/s/d1_{d1:g}/e8k2/d2_{d2:g}", kind="upcycled", model="s", moe="e8k2"))
            rows[-1].update(D1=d1, D2=d2, D=d2, N_active=2e5, N_dense=1e5, val_loss=loss, replica=1)
    table = pd.DataFrame(rows)
    table.loc[table.index[-1], "val_loss"] += bump
    replicas = table.iloc[[0, len(table) - 1]].copy()
    replicas["run_id"] = replicas["run_id"].str.replace("/s/", "/s@2/")
    replicas["replica"] = 2
    replicas["val_loss"] += noise
    return pd.concat([table, replicas], ignore_index=True)


def test_seed_noise_pools_replicated_cells() -> None:
    noise = F.seed_noise(_runs(noise=0.01))
    assert noise.cells == 2 and noise.runs == 4
    assert noise.sigma == pytest.approx(0.01 / math.sqrt(2))  # two seeds 0.01 apart: sd = 0.01 / sqrt(2)
    assert noise.band() == pytest.approx(1.96 * 0.01)
    assert math.isnan(F.seed_noise(_runs().query("replica == 1")).sigma)


def test_cell_means_average_the_seeds() -> None:
    cells = F.cell_means(_runs(noise=0.02))
    first = cells[cells["cell"] == "dense/s/d1_100000"]
    assert len(first) == 1 and int(first["n_seeds"].iloc[0]) == 2
    base = 2 + 50 * 1e5**-0.3 + 5 * 1e5**-0.1
    assert float(first["val_loss"].iloc[0]) == pytest.approx(base + 0.01)


def test_monotone_row_finds_a_loss_that_rises_with_tokens() -> None:
    clean = F.monotone_row(F.cell_means(_runs()), F.seed_noise(_runs()))
    assert clean.verdict == F.REPRODUCED
    broken = _runs(bump=0.5)  # the largest upcycled cell gets worse than its neighbours
    row = F.monotone_row(F.cell_means(broken), F.seed_noise(broken))
    assert row.verdict == F.CONTRADICTED and "upcycled" in row.evidence


def _fit(params: dict[str, float], ci: dict[str, list[float]], short: str = "ok") -> dict:
    return {"law": "chinchilla", "params": params, "bootstrap": {"ci95": ci}, "diagnostics": {"short": short}}


def test_dense_law_verdicts_follow_intervals_and_diagnostics() -> None:
    params = {"E": 1.5, "A": 10.0, "alpha": 0.3, "B": 20.0, "beta": 0.3}
    good = _fit(params, {"E": [1.4, 1.6], "alpha": [0.2, 0.4], "beta": [0.25, 0.35]})
    assert F.dense_law_row(good).verdict == F.REPRODUCED
    collapsed = _fit(params, {"E": [0.0, 1.6], "alpha": [0.2, 0.4], "beta": [0.25, 0.35]}, "collapsed: E")
    assert F.dense_law_row(collapsed).verdict == F.NOT_AT_SCALE
    negative = _fit(params, {"E": [1.4, 1.6], "alpha": [-0.4, -0.1], "beta": [0.25, 0.35]})
    assert F.dense_law_row(negative).verdict == F.CONTRADICTED
    assert F.dense_law_row(None).verdict == F.NOT_MEASURED


def test_interaction_row_needs_alpha3_interval_above_zero() -> None:
    params = {"A": 5.0, "alpha1": 0.1, "alpha2": 0.05, "alpha3": 0.01, "E": 2.0}
    ci = {"alpha1": [0.05, 0.2], "alpha2": [0.01, 0.1], "alpha3": [0.004, 0.02]}
    fit = {**_fit(params, ci), "law": "upcycled"}
    assert F.interaction_row(fit, "upcycled").verdict == F.REPRODUCED
    fit["bootstrap"]["ci95"]["alpha3"] = [-0.01, 0.02]
    assert F.interaction_row(fit, "upcycled").verdict == F.NOT_AT_SCALE
    fit["bootstrap"]["ci95"]["alpha3"] = [-0.03, -0.01]
    assert F.interaction_row(fit, "upcycled").verdict == F.CONTRADICTED


def test_heldout_rows_report_the_miss() -> None:
    rows = [{"run_id": f"r{i}", "rel_err": e} for i, e in enumerate((0.01, -0.015, 0.005))]
    fits = {"a": {"law": "upcycled", "holdout": {"query": "D2 > 1", "rows": rows}}}
    (row,) = F.heldout_rows(fits)
    assert row.verdict == F.REPRODUCED and "1.50%" in row.measured
    fits["a"]["holdout"]["rows"] = [{"run_id": "r", "rel_err": 0.05}] * 3
    assert F.heldout_rows(fits)[0].verdict == F.CONTRADICTED
    assert F.heldout_rows({"b": {"law": "upcycled", "holdout": None}}) == []


def test_dense_cont_row_compares_at_equal_total_compute() -> None:
    cells = pd.DataFrame(
        [
            dict(kind="dense_cont", model="s", D1=1e5, D2=d2, flops_total=f, val_loss=loss)
            for d2, f, loss in ((1e5, 1e12, 4.0), (2e5, 2e12, 3.8), (4e5, 4e12, 3.6))
        ]
        + [dict(kind="upcycled", model="s", D1=1e5, D2=1e5, flops_total=2e12, val_loss=3.5)]
    )
    row = F.dense_cont_row(cells, F.SeedNoise(0.01, 1, 2))
    assert row.verdict == F.REPRODUCED and "-0.3000" in row.measured


def test_command_writes_csv_and_markdown(tmp_path: Path) -> None:
    runs = _runs(noise=0.003)
    table = tmp_path / "runs.csv"
    runs.to_csv(table, index=False)
    fits = tmp_path / "fits"
    fits.mkdir()
    fit = _fit({"E": 1.5, "A": 10.0, "alpha": 0.3, "B": 20.0, "beta": 0.3}, {"E": [1.4, 1.6]})
    (fits / "dense_chinchilla.json").write_text(json.dumps(fit))
    out = tmp_path / "findings"
    cmd = [sys.executable, "-m", "stages.findings", "--runs", str(table), "--fits", str(fits), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    written = pd.read_csv(out.with_suffix(".csv"))
    assert list(written.columns) == F.COLUMNS
    verdicts = dict(zip(written["finding"], written["verdict"], strict=True))
    assert verdicts["seed_noise"] == F.REPRODUCED and verdicts["monotone_grid"] == F.REPRODUCED
    assert verdicts["upcycle_vs_scratch"] == F.NOT_MEASURED  # no scratch runs, no scratch fit
    assert "| finding |" in out.with_suffix(".md").read_text()
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and np.array_equal(
        pd.read_csv(out.with_suffix(".csv")).to_numpy(dtype=str), written.to_numpy(dtype=str)
    )


def test_command_refuses_a_table_without_losses(tmp_path: Path) -> None:
    table = tmp_path / "runs.csv"
    table.write_text("run_id,kind\na,dense\n")
    cmd = [sys.executable, "-m", "stages.findings", "--runs", str(table), "--fits", str(tmp_path), "--out", "x"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "val_loss" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_threshold_row_needs_a_trained_run_past_the_predicted_d2star() -> None:
    def cells(past_gap: float) -> pd.DataFrame:
        rows = [dict(kind="upcycled", model="s", moe="e8", D1=1e5, D2=d2, val_loss=4.0) for d2 in (1e5, 4e5)]
        rows += [dict(kind="scratch_moe", model="s", moe="e8", D=1e5, val_loss=4.5)]
        rows += [dict(kind="scratch_moe", model="s", moe="e8", D=4e5, val_loss=4.0 - past_gap)]
        return pd.DataFrame(rows)

    def crossing(d1: float) -> tuple[list[float], bool]:
        return [2e5], True  # upcycling wins below 200K tokens

    noise = F.SeedNoise(0.01, 1, 2)
    assert F.threshold_row(cells(0.2), noise, crossing).verdict == F.REPRODUCED  # scratch wins past D2*
    assert F.threshold_row(cells(0.0), noise, crossing).verdict == F.NOT_AT_SCALE  # a tie past D2*
    assert F.threshold_row(cells(-0.2), noise, crossing).verdict == F.CONTRADICTED  # upcycling still wins there
    never = F.threshold_row(cells(0.2), noise, lambda d1: ([], True))  # the law predicts no crossing: a split
    assert never.verdict == F.NOT_AT_SCALE and "D2* none" in never.evidence
    tie = F.threshold_row(cells(0.0), noise, crossing, predicted=lambda d1, d2: 0.003 * d2 / 4e5)
    assert tie.evidence.endswith("; laws predict L_up - L_scratch +0.0030 at D1 100K D2 400K")  # past pairs only


def test_wsd_cost_counts_each_family_stable_phase_once() -> None:
    runs = pd.DataFrame(
        [  # one family, budgets 100 and 200 tokens, cooldowns from 80 and 160: 160 stable + 20 + 40 cooldown
            dict(run_id="dense/s/d1_100", kind="dense", D=100, branch_tokens=80),
            dict(run_id="dense/s/d1_200", kind="dense", D=200, branch_tokens=160),
            dict(run_id="scratch/s/e8/d_50", kind="scratch_moe", D=50, branch_tokens=0),  # an independent run
        ]
    )
    row = F.wsd_cost_row(runs)
    assert row.verdict == F.REPRODUCED and row.measured.endswith(f"{(160 + 20 + 40 + 50) / 350:.3f}")
    assert F.wsd_cost_row(runs.assign(branch_tokens=0)).verdict == F.NOT_MEASURED


def test_monotone_row_never_pairs_two_moe_variants() -> None:
    """Scratch MoEs with other expert counts at one budget are a sparsity sweep, not a size or token axis."""
    rows = [
        dict(run_id=f"scratch/s/{moe}/d_1M", kind="scratch_moe", model="s", moe=moe, D=1e6, N_active=n, val_loss=loss)
        for moe, n, loss in (("e2k1", 131648, 4.0), ("e16k1", 133440, 4.3))
    ]
    rows += [dict(r, run_id=r["run_id"].replace("1M", "2M"), D=2e6, val_loss=r["val_loss"] - 0.1) for r in rows]
    table = pd.DataFrame(rows).assign(replica=1)
    row = F.monotone_row(F.cell_means(table), F.seed_noise(table))
    assert row.verdict == F.REPRODUCED and row.measured == "2 of 2 neighbouring pairs fall", row


def _paired_runs(diffs: list[float], shared: list[float]) -> pd.DataFrame:
    """Upcycled vs dense continued of one parent at seeds 1..n: seed k moves both arms by ``shared[k]`` (the
    lineage's noise) and the upcycled run by ``diffs[k]`` more, at the compute of the continued run at 200K."""
    rows = []
    for k, (diff, offset) in enumerate(zip(diffs, shared, strict=True), start=1):
        model = "s" if k == 1 else f"s@{k}"
        for d2, flops, loss in ((1e5, 1e12, 4.0), (2e5, 2e12, 3.8), (4e5, 4e12, 3.6)):
            rows.append(dict(run_id=f"dense_cont/{model}/d1_100K/d2_{d2:g}", kind="dense_cont", D2=d2, val_loss=loss))
            rows[-1].update(flops_total=flops)
        rows.append(dict(run_id=f"moe/{model}/d1_100K/e8k2/d2_1e+05", kind="upcycled", D2=1e5, val_loss=3.8 + diff))
        rows[-1].update(flops_total=2e12, moe="e8k2")
        for row in rows[-4:]:
            row.update(model="s", D1=1e5, replica=k)
            row["val_loss"] += offset
    return pd.DataFrame(rows)


def _judge(runs: pd.DataFrame) -> F.Finding:
    return F.dense_cont_row(F.cell_means(runs), F.seed_noise(runs), F.seed_cells(runs))


def test_paired_interval_is_a_t_interval_over_seeds_of_the_difference() -> None:
    """Differences -0.10, -0.12, -0.08 under shared seed noise of 0.06: the t interval (2 dof) excludes zero where the
    marginal band (built from the shared noise) would call every pair a tie."""
    runs = _paired_runs([-0.10, -0.12, -0.08], [0.0, 0.06, -0.06])
    estimate = P.paired(F.seed_cells(runs), F._cont_gaps)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2) x sd 0.02 / sqrt(3 seeds)
    assert estimate.seeds == 3 and estimate.pairs == ("s e8k2 D1 100K D2 100K",)
    assert estimate.effect == pytest.approx(-0.10) and estimate.sd == pytest.approx(0.02)
    assert (estimate.low, estimate.high) == (pytest.approx(-0.10 - half), pytest.approx(-0.10 + half))
    row = _judge(runs)
    assert F.seed_noise(runs).band() > 0.12  # the marginal band holds every difference
    assert row.verdict == F.REPRODUCED and row.seeds == "3" and row.effect == "-0.1000"
    assert row.interval == f"paired 95% t [{-0.10 - half:+.4f}, {-0.10 + half:+.4f}]"
    assert "the dense parent at D1 and the data order" in row.evidence


def test_paired_verdict_is_decisive_both_ways_and_undecided_only_across_zero() -> None:
    shared = [0.0, 0.06, -0.06]
    assert _judge(_paired_runs([0.10, 0.12, 0.08], shared)).verdict == F.CONTRADICTED
    assert _judge(_paired_runs([-0.02, 0.03, 0.0], shared)).verdict == F.NOT_AT_SCALE
    assert P.judge(P.Paired(0.1, 0.05, 0.15, 3, ("a",)), better=1) == 1  # a claim of a higher value
    assert P.judge(P.Paired(0.1, 0.05, 0.15, 3, ("a",))) == -1


def test_fewer_than_three_seed_pairs_keep_the_marginal_band_and_say_so() -> None:
    runs = _paired_runs([-0.10, -0.12], [0.0, 0.10])
    row = _judge(runs)
    assert row.seeds == "2" and "2 seed pairs (< 3): no paired interval" in row.interval
    assert row.interval.startswith(f"+/-{F.seed_noise(runs).band():.4f}") and "marginal band" in row.interval
    assert row.verdict == F.NOT_AT_SCALE  # -0.11 on average, inside the marginal band of the shared noise
    single = _judge(_paired_runs([-0.10], [0.0]))
    assert single.seeds == "1" and "1 seed pair (< 3)" in single.interval
    unpaired = F.dense_cont_row(F.cell_means(runs), F.seed_noise(runs))  # no seed tables: never silently paired
    assert "no replicated pair: marginal band" in unpaired.interval and unpaired.seeds == "1"


def test_replicated_pairs_are_those_of_the_most_seeds() -> None:
    """A second pair trained at two seeds only is left out of the paired mean rather than shrinking its seeds."""
    runs = _paired_runs([-0.10, -0.12, -0.08], [0.0, 0.06, -0.06])
    extra = runs[(runs["kind"] == "upcycled") & (runs["replica"] <= 2)].copy()
    extra["run_id"] = extra["run_id"].str.replace("e8k2", "e4k1")
    extra["moe"] = "e4k1"
    extra["val_loss"] += 1.0
    estimate = P.paired(F.seed_cells(pd.concat([runs, extra])), F._cont_gaps)
    assert estimate.seeds == 3 and estimate.pairs == ("s e8k2 D1 100K D2 100K",)
    assert estimate.effect == pytest.approx(-0.10)


def test_findings_rows_carry_effect_and_seeds_columns(tmp_path: Path) -> None:
    table = F.findings_table([_judge(_paired_runs([-0.10, -0.12, -0.08], [0.0, 0.06, -0.06]))])
    assert list(table.columns) == F.COLUMNS and table.loc[0, "seeds"] == "3"
    assert "| effect |" in F.markdown(table) and "| 3 |" in F.markdown(table)


def _budget_sweeps(change: float, seeds: int = 3) -> pd.DataFrame:
    """Upcycled top-1 sweeps E = 2, 4, 8 at D2 = 800K and 3.2M: the E 8 - E 2 gap is +0.06 at 800K and
    +0.06 + ``change`` at 3.2M; each seed shifts a whole sweep (its lineage) by its own offset."""
    rows = []
    for k in range(1, seeds + 1):
        model = "s" if k == 1 else f"s@{k}"
        for d2, tag in ((799744.0, "800K"), (3198976.0, "3.2M")):
            for e in (2, 4, 8):
                loss = 4.3 - (0.2 if d2 > 1e6 else 0.0) + 0.03 * math.log2(e) + 0.01 * k * (-1) ** k
                loss += change * (math.log2(e) - 1) / 2 if d2 > 1e6 else 0.0
                loss += 0.003 * math.sin(k * e + 7 * (d2 > 1e6))  # a little noise of the difference
                rows.append(
                    dict(run_id=f"moe/{model}/d1_400K/e{e}k1/d2_{tag}", kind="upcycled", model="s", moe=f"e{e}k1")
                )
                rows[-1].update(experts=e, top_k=1, granularity=1, D1=399872.0, D2=d2, D=399872.0 + d2)
                rows[-1].update(val_loss=loss, replica=k)
    return pd.DataFrame(rows)


def test_experts_with_tokens_compares_the_expert_gap_across_budgets() -> None:
    def judge(runs: pd.DataFrame) -> F.Finding:
        return F.experts_budget_row(F.cell_means(runs), F.seed_noise(runs), F.seed_cells(runs))

    narrows = judge(_budget_sweeps(-0.05))
    assert narrows.verdict == F.REPRODUCED and narrows.seeds == "3", narrows
    assert float(narrows.effect) == pytest.approx(-0.05, abs=0.01)
    low, high = (float(x) for x in narrows.interval.removeprefix("paired 95% t [").removesuffix("]").split(", "))
    assert low < float(narrows.effect) < high < 0
    assert "upcycled s E 2->8 799.7K->3.199M: +0.0599 -> +0.0096" in narrows.evidence
    assert judge(_budget_sweeps(+0.05)).verdict == F.CONTRADICTED
    one_budget = _budget_sweeps(-0.05)
    one_budget = one_budget[one_budget["D2"] < 1e6]
    assert judge(one_budget).verdict == F.NOT_MEASURED
    two_seeds = judge(_budget_sweeps(-0.05, seeds=2))
    assert "marginal band" in two_seeds.interval and two_seeds.seeds == "2"
