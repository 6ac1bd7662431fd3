"""The planner: paper-derived thresholds, budget framings, optimal split, and its user errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

from stages.laws.planner import Laws, plan

# Table 2 of Liew et al. 2025 (arXiv 2502.03009), natural logs, raw counts. In our chinchilla naming the
# N term is A N^-alpha and the D term B D^-beta, so the paper's (A, alpha) for data are our (B, beta).
UPCYCLED = {"A": 16.3, "alpha1": 0.043, "alpha2": 0.085, "alpha3": 7.98e-4, "B": 8.53, "beta": 0.112, "E": 0.165}
SCRATCH = {"A": 7.05, "alpha": 0.080, "B": 32.0, "beta": 0.161, "E": 0.165}
DENSE = {"A": 12.3, "alpha": 0.116, "B": 8.83, "beta": 0.088, "E": 0.165}
RANGES = {"N1": [1e8, 1e10], "D1": [1e9, 1e12], "D2": [1e9, 1e12], "N": [1e8, 1e10], "D": [1e9, 1e12]}


@pytest.fixture
def fits(tmp_path):
    for name, law, params in (
        ("upcycled", "joint_upcycled", UPCYCLED),
        ("scratch_chinchilla", "chinchilla", SCRATCH),
        ("dense_chinchilla", "chinchilla", DENSE),
    ):
        cols = ("N1", "D1", "D2") if law == "joint_upcycled" else ("N", "D")
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"law": law, "params": params, "ranges": {c: RANGES[c] for c in cols}})
        )
    return tmp_path


def laws(fits_dir) -> Laws:
    return Laws.read(fits_dir, {"upcycle": "upcycled", "scratch": "scratch_chinchilla", "dense": "dense_chinchilla"})


@pytest.mark.parametrize(("n1", "log10_d2_star"), [(1e9, 9.85), (1e8, 10.11)])
def test_same_token_threshold_matches_the_paper_derivation(fits, n1, log10_d2_star):
    """The paper's derivation (appendix A1.5): D1 = 1e10 gives D2* = 10^9.85 (N1 = 1e9), 10^10.11 (N1 = 1e8)."""
    table, _ = plan(laws(fits), n1, 1.6 * n1, 1e10, 1e10, None, 100.0)
    row = table.set_index("option").loc["threshold_same_tokens"]
    assert abs(math.log10(row["tokens_this_phase"]) - log10_d2_star) < 0.025
    assert row["note"].startswith("D2*: upcycling wins below, scratch above")


def test_framings_and_options(fits):
    table, warnings = plan(laws(fits), 1e9, 1.6e9, 1e10, 1e10, None, 100.0)
    t = table.set_index("option")
    assert not warnings
    assert t.loc["scratch_same_compute", "tokens_this_phase"] == pytest.approx(1e10 + 1e10 / 1.6)
    assert t.loc["scratch_same_compute", "predicted_loss"] < t.loc["scratch_same_tokens", "predicted_loss"]
    assert t.loc["upcycle", "flops_total"] == pytest.approx(6 * 1e9 * 1e10 + 6 * 1.6e9 * 1e10)
    up = float(laws(fits).upcycled(1e9, 1e10, 1e10)[0])
    assert t.loc["upcycle", "predicted_loss"] == pytest.approx(
        16.3 * 1e10**-0.043 * 1e10 ** (-0.085 + 7.98e-4 * math.log(1e10)) + 8.53 * 1e9**-0.112 + 0.165
    )
    assert up == pytest.approx(t.loc["upcycle", "predicted_loss"])


def test_optimal_split_spends_the_budget_and_is_a_minimum(fits):
    c = 1e21
    table, _ = plan(laws(fits), 1e9, 1.6e9, 1e10, 1e10, c, 100.0)
    row = table.set_index("option").loc["optimal_split"]
    d2 = row["tokens_this_phase"]
    d1 = (c - 6 * 1.6e9 * d2) / (6 * 1e9)
    assert row["flops_total"] == pytest.approx(c)
    assert d1 > 0 and row["predicted_loss"] == pytest.approx(float(laws(fits).upcycled(1e9, d1, d2)[0]))
    for share in (0.9, 1.1):  # moving compute either way does not help
        d1s = d1 * share
        d2s = (c - 6 * 1e9 * d1s) / (6 * 1.6e9)
        assert float(laws(fits).upcycled(1e9, d1s, d2s)[0]) >= row["predicted_loss"]


def run_planner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.planner", *args], cwd=REPO, capture_output=True, text=True)


def test_cli_writes_a_table_and_warns_on_extrapolation(fits, tmp_path):
    out = tmp_path / "plan.csv"
    res = run_planner(
        "--fits",
        str(fits),
        "--n1",
        "1e9",
        "--n-active",
        "1.6e9",
        "--d1",
        "1e10",
        "--extra-flops",
        "1e20",
        "--total-flops",
        "1e21",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(out)
    assert set(table["option"]) >= {
        "upcycle",
        "scratch_same_tokens",
        "scratch_same_compute",
        "dense_continued",
        "threshold_same_tokens",
        "threshold_same_compute",
        "optimal_split",
    }
    assert "lowest predicted loss" in res.stdout
    res = run_planner(
        "--fits", str(fits), "--n1", "1e9", "--n-active", "1.6e9", "--d1", "2e12", "--extra-tokens", "1e10"
    )
    assert res.returncode == 0 and "outside the fitted range [1e+09, 1e+12]" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--d1", "1e15", "--extra-tokens", "1e10"], "refusing to predict"),
        (["--d1", "1e10", "--extra-tokens", "0"], "--extra-tokens: must be a positive number"),
        (
            ["--d1", "1e10", "--extra-tokens", "1e10", "--upcycled-fit", "missing"],
            "missing.json: no fit of the upcycled",
        ),
    ],
)
def test_cli_user_errors(fits, args, message):
    res = run_planner("--fits", str(fits), "--n1", "1e9", "--n-active", "1.6e9", *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_bootstrap_resamples_give_intervals_around_the_point_estimate(fits):
    rng = __import__("numpy").random.default_rng(0)
    for name in ("upcycled", "scratch_chinchilla", "dense_chinchilla"):
        path = fits / f"{name}.json"
        fit = json.loads(path.read_text())
        fit["bootstrap"] = {
            "samples": [
                {k: v * (1 + 0.01 * rng.standard_normal()) for k, v in fit["params"].items()} for _ in range(40)
            ]
        }
        path.write_text(json.dumps(fit))
    table, _ = plan(laws(fits), 1e9, 1.6e9, 1e10, 1e10, 1e21, 100.0)
    t = table.set_index("option")
    for option in ("upcycle", "scratch_same_tokens", "dense_continued", "optimal_split"):
        assert t.loc[option, "loss_ci95_low"] < t.loc[option, "predicted_loss"] < t.loc[option, "loss_ci95_high"]
        assert t.loc[option, "bootstrap_draws"] == 40
    low, high = t.loc["threshold_same_tokens", ["tokens_ci95_low", "tokens_ci95_high"]]
    assert low < t.loc["threshold_same_tokens", "tokens_this_phase"] < high


def test_every_crossing_is_reported():
    """Laws that tie twice (here at 1e5 and 1e8 tokens) give both roots; the note names the second one."""
    from stages.laws.planner import _threshold_note, crossings

    roots, upcycle_first = crossings(lambda x: (x - math.log(1e5)) * (x - math.log(1e8)))
    assert roots == pytest.approx([1e5, 1e8], rel=1e-8) and not upcycle_first
    assert _threshold_note(roots, upcycle_first) == (
        "D2*: scratch wins below, upcycling above; the laws cross again at 1e+08"
    )
    assert crossings(lambda x: x * 0 - 1.0) == ([], True)


def test_threshold_figure_draws_the_tie_per_dense_size(fits, tmp_path):
    """Paper Fig. 1 right from the joint law: one tie contour per N1 and framing, bytes identical when redrawn."""
    from stages.figures import main
    from stages.report.figures import threshold

    runs = pd.DataFrame(
        [
            {"kind": "upcycled", "N_dense": n1, "N_active": 1.6 * n1, "D1": d1, "D2": d2, "loss": 2.5}
            for n1 in (1e8, 1e9)
            for d1 in (1e9, 1e10, 1e11)
            for d2 in (1e9, 1e10)
        ]
    )
    fig_fits = {name: json.loads((fits / f"{name}.json").read_text()) for name in ("upcycled", "scratch_chinchilla")}
    fig = threshold(runs, fig_fits)
    for ax in fig.axes:
        ties = [c for c in ax.collections if list(getattr(c, "levels", [])) == [0.0]]
        assert len(ties) == 2  # one per N1
    runs.to_csv(tmp_path / "runs.csv", index=False)
    fit_args = [a for name in ("upcycled", "scratch_chinchilla") for a in ("--fit", str(fits / f"{name}.json"))]
    blobs = []
    for i in range(2):
        main(["threshold", "--runs", str(tmp_path / "runs.csv"), *fit_args, "--out", str(tmp_path / f"t{i}")])
        blobs.append(((tmp_path / f"t{i}.png").read_bytes(), (tmp_path / f"t{i}.pdf").read_bytes()))
    assert blobs[0] == blobs[1]
