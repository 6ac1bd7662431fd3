"""The planner: paper-derived thresholds, compute ledger, extrapolation flags, budget rule, verdict, liew2025."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from stages.laws.fitted import Laws
from stages.laws.outcomes import Budget
from stages.laws.planner import plan

# Table 2 of Liew et al. 2025 (arXiv 2502.03009), natural logs, raw counts. In our chinchilla naming the
# N term is A N^-alpha and the D term B D^-beta, so the paper's (A, alpha) for data are our (B, beta).
UPCYCLED = {"A": 16.3, "alpha1": 0.043, "alpha2": 0.085, "alpha3": 7.98e-4, "B": 8.53, "beta": 0.112, "E": 0.165}
SCRATCH = {"A": 7.05, "alpha": 0.080, "B": 32.0, "beta": 0.161, "E": 0.165}
DENSE = {"A": 12.3, "alpha": 0.116, "B": 8.83, "beta": 0.088, "E": 0.165}
RANGES = {"N1": [1e8, 1e10], "D1": [1e9, 1e12], "D2": [1e9, 1e12], "N": [1e8, 1e10], "D": [1e9, 1e12]}
NAMES = ("upcycled", "scratch_chinchilla", "dense_chinchilla")
N1, NA, D1 = 1e9, 1.6e9, 1e10


def paper_upcycled(n1: float, d1: float, d2: float) -> float:
    """Table 2, row Upcycled, written out by hand in the paper's form."""
    return 16.3 * d1**-0.043 * d2 ** (-0.085 + 7.98e-4 * math.log(d1)) + 8.53 * n1**-0.112 + 0.165


def paper_chinchilla(a: float, alpha: float, b: float, beta: float, n: float, d: float) -> float:
    """The paper's L = A D^-alpha + B N^-beta + E (A and alpha go with data)."""
    return a * d**-alpha + b * n**-beta + 0.165


@pytest.fixture
def fits(tmp_path):
    for name, law, params in zip(
        NAMES, ("joint_upcycled", "chinchilla", "chinchilla"), (UPCYCLED, SCRATCH, DENSE), strict=True
    ):
        cols = ("N1", "D1", "D2") if law == "joint_upcycled" else ("N", "D")
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"law": law, "params": params, "ranges": {c: RANGES[c] for c in cols}})
        )
    return tmp_path


def laws(fits_dir) -> Laws:
    return Laws.read(fits_dir, {"upcycle": "upcycled", "scratch": "scratch_chinchilla", "dense": "dense_chinchilla"})


def edit_fits(fits_dir, edit) -> None:
    for i, name in enumerate(NAMES):
        path = fits_dir / f"{name}.json"
        fit = json.loads(path.read_text())
        edit(i, fit)
        path.write_text(json.dumps(fit))


def add_floor_bootstrap(fits_dir, spread: float, n: int = 200) -> None:
    """Synthetic bootstrap: each law's floor E drawn uniformly within +-spread, independently per law."""

    def edit(i, fit):
        rng = np.random.default_rng(i)
        fit["bootstrap"] = {"samples": [{**fit["params"], "E": 0.165 + spread * u} for u in rng.uniform(-1, 1, n)]}

    edit_fits(fits_dir, edit)


@pytest.mark.parametrize(("n1", "log10_d2_star"), [(1e9, 9.85), (1e8, 10.11)])
def test_same_token_threshold_matches_the_paper_derivation(fits, n1, log10_d2_star):
    """The paper's derivation (appendix A1.5): D1 = 1e10 gives D2* = 10^9.85 (N1 = 1e9), 10^10.11 (N1 = 1e8)."""
    table, _ = plan(laws(fits), n1, 1.6 * n1, 1e10, 1e10, None, 100.0)
    row = table.set_index("option").loc["threshold_same_tokens"]
    assert abs(math.log10(row["tokens_this_phase"]) - log10_d2_star) < 0.025
    assert row["note"].startswith("D2*: upcycling wins below, scratch above")


def test_options_follow_the_laws(fits):
    t = plan(laws(fits), N1, NA, D1, 1e10, None, 100.0)[0].set_index("option")
    assert t.loc["upcycle", "predicted_loss"] == pytest.approx(paper_upcycled(N1, D1, 1e10))
    assert t.loc["scratch_same_tokens", "predicted_loss"] == pytest.approx(
        paper_chinchilla(32.0, 0.161, 7.05, 0.080, N1, 1e10)
    )
    assert t.loc["scratch_same_compute", "tokens_this_phase"] == pytest.approx(1e10 + 1e10 / 1.6)
    assert t.loc["scratch_same_compute", "predicted_loss"] < t.loc["scratch_same_tokens", "predicted_loss"]
    assert t.loc["dense_continued", "predicted_loss"] == pytest.approx(
        paper_chinchilla(8.83, 0.088, 12.3, 0.116, N1, D1 + 1e10)
    )


def test_compute_ledger_counts_the_sunk_cost_once(fits):
    """Sunk 6 N1 D1 once; 'same total compute' = equal flops_total; flops_extra = what is still to be spent."""
    sunk, d2 = 6 * N1 * D1, 1e10
    t = plan(laws(fits), N1, NA, D1, Budget(d2, "tokens"), None, 100.0)[0].set_index("option")
    assert t.loc["upcycle", ["flops_extra", "flops_total"]].tolist() == pytest.approx([6 * NA * d2, sunk + 6 * NA * d2])
    assert t.loc["scratch_same_compute", "flops_total"] == pytest.approx(t.loc["upcycle", "flops_total"])
    assert t.loc["scratch_same_compute", "flops_extra"] == pytest.approx(sunk + 6 * NA * d2)  # all of it is new
    assert t.loc["scratch_same_tokens", ["flops_extra", "flops_total"]].tolist() == pytest.approx([6 * NA * d2] * 2)
    assert t.loc["dense_continued", ["flops_extra", "flops_total"]].tolist() == pytest.approx(
        [6 * N1 * d2, 6 * N1 * (D1 + d2)]
    )
    # a FLOP budget: every option that competes spends exactly it; the dense model gets more tokens per FLOP
    c = 1e20
    t = plan(laws(fits), N1, NA, D1, Budget(c, "flops"), None, 100.0)[0].set_index("option")
    for option in ("upcycle", "scratch_same_tokens", "dense_continued"):
        assert t.loc[option, "flops_extra"] == pytest.approx(c)
        assert t.loc[option, "flops_total"] == pytest.approx(c + (0 if option.startswith("scratch") else sunk))
    assert t.loc["dense_continued", "tokens_this_phase"] == pytest.approx(c / (6 * N1))
    assert t.loc["upcycle", "tokens_this_phase"] == pytest.approx(c / (6 * NA))
    assert t.loc["scratch_same_compute", "flops_total"] == pytest.approx(t.loc["upcycle", "flops_total"])


def test_optimal_split_spends_the_budget_and_is_a_minimum(fits):
    c = 1e21
    table, _ = plan(laws(fits), N1, NA, D1, 1e10, c, 100.0)
    row = table.set_index("option").loc["optimal_split"]
    d2 = row["tokens_this_phase"]
    d1 = (c - 6 * NA * d2) / (6 * N1)
    assert row["flops_total"] == pytest.approx(c) and row["flops_extra"] == pytest.approx(c)  # a fresh run
    assert d1 > 0 and row["predicted_loss"] == pytest.approx(float(laws(fits).upcycled(N1, d1, d2)[0]))
    for share in (0.9, 1.1):  # moving compute either way does not help
        d1s = d1 * share
        d2s = (c - 6 * N1 * d1s) / (6 * NA)
        assert float(laws(fits).upcycled(N1, d1s, d2s)[0]) >= row["predicted_loss"]


def test_extrapolation_factor_is_one_inside_and_flags_outside(fits):
    table, warnings = plan(laws(fits), N1, NA, D1, 1e10, 1e21, 100.0)
    t = table.set_index("option")
    for option in ("upcycle", "scratch_same_tokens", "scratch_same_compute", "dense_continued", "optimal_split"):
        assert t.loc[option, "extrapolation"] == 1.0 and t.loc[option, "extrapolated"] == "no"
    assert t.loc["threshold_same_tokens", "extrapolated"] == "no"
    # the same-compute crossing lies ~330x beyond the fitted D2 (1e12): flagged in the row and on stderr, not refused
    row = t.loc["threshold_same_compute"]
    assert row["extrapolation"] > 100.0 and row["extrapolated"] == "yes"
    assert "upcycle: D2 = " in row["note"] and "flagged, not refused" in row["note"]
    assert any(w.startswith("upcycle: D2") and w.endswith("(threshold_same_compute)") for w in warnings)

    def narrow(i, fit):  # D2 fitted only on 1e9..2.5e9: the option D2 = 1e10 is 4x outside
        for col in ("D2", "D"):
            if col in fit["ranges"]:
                fit["ranges"][col] = [1e9, 2.5e9]

    edit_fits(fits, narrow)
    t = plan(laws(fits), N1, NA, D1, 1e10, None, 100.0)[0].set_index("option")
    assert t.loc["upcycle", "extrapolation"] == pytest.approx(4.0) and t.loc["upcycle", "extrapolated"] == "yes"
    assert "outside the fitted range [1e+09, 2.5e+09] (x4)" in t.loc["upcycle", "note"]
    assert t.loc["dense_continued", "extrapolation"] == pytest.approx((D1 + 1e10) / 2.5e9)
    assert t.loc["threshold_same_tokens", "extrapolation"] == pytest.approx(7.07e9 / 2.5e9, rel=0.01)
    verdict = t.loc["verdict", "note"]
    assert "extrapolated: " in verdict
    with pytest.raises(Exception, match="refusing to predict"):  # options beyond --max-extrapolation: refused
        plan(laws(fits), N1, NA, D1, 1e10, None, 3.0)

    def no_ranges(i, fit):
        del fit["ranges"]

    edit_fits(fits, no_ranges)
    t = plan(laws(fits), N1, NA, D1, 1e10, None, 100.0)[0].set_index("option")
    assert t.loc["upcycle", "extrapolated"] == "unknown" and math.isnan(t.loc["upcycle", "extrapolation"])
    assert "extrapolation unknown: upcycle: the fit records no data ranges" in t.loc["upcycle", "note"]


def test_verdict_is_too_close_to_call_when_the_best_two_intervals_overlap(fits):
    d2_star = plan(laws(fits), N1, NA, D1, 1e10, None, 100.0)[0].set_index("option").loc["threshold_same_tokens"]
    add_floor_bootstrap(fits, spread=0.01)
    t = plan(laws(fits), N1, NA, D1, d2_star["tokens_this_phase"], None, 100.0)[0].set_index("option")
    up, sc = t.loc["upcycle"], t.loc["scratch_same_tokens"]
    assert up["loss_ci95_low"] < sc["loss_ci95_high"] and sc["loss_ci95_low"] < up["loss_ci95_high"]
    note = t.loc["verdict", "note"]
    assert note.startswith("too close to call: ") and "inside their 95% intervals" in note
    assert "narrower intervals would decide it" in note and "the laws cross at D2* = " in note
    assert math.isnan(t.loc["verdict", "predicted_loss"])  # no winner's numbers on the verdict row


ISSUE_QUESTION = ["--fits", "liew2025", "--n1", "1e9", "--n-active", "1.6e9", "--d1", "1e11", "--extra-tokens", "5e10"]


def test_a_margin_under_min_margin_without_intervals_is_too_close_to_call(tmp_path, capsys):
    """The published point estimates at D2 = 5e10, right at D2* = 5.06e10: upcycling 'won' by 0.0003 nats (0.02%)."""
    from stages.planner import main

    main([*ISSUE_QUESTION, "--out", str(tmp_path / "plan.csv")])
    verdict = pd.read_csv(tmp_path / "plan.csv").set_index("option").loc["verdict"]
    assert verdict["note"].startswith(
        "too close to call: upcycle 2.1142 vs scratch_same_tokens 2.1145, margin 0.0003262 nats (0.02%) under the "
        "0.50% of --min-margin, without intervals; the laws cross at D2* = 5.064e+10, 1.3% above your D2 = 5e+10 "
        "(upcycling wins below, scratch above); intervals would decide it"
    )
    assert math.isnan(verdict["predicted_loss"]) and f"verdict: {verdict['note']}" in capsys.readouterr().out
    main([*ISSUE_QUESTION, "--min-margin", "0.0001", "--out", str(tmp_path / "plan.csv")])  # a smaller threshold
    verdict = pd.read_csv(tmp_path / "plan.csv").set_index("option").loc["verdict"]
    assert verdict["note"].startswith("upcycle, lowest predicted loss within 5e+10 extra tokens, by 0.0003262 nats")


def test_counts_take_the_configs_suffixes_and_scientific_notation(tmp_path):
    from stages.planner import main

    main(["--fits", "liew2025", "--n1", "1B", "--n-active", "1.6B", "--d1", "100B", "--extra-tokens", "50B"]
         + ["--out", str(tmp_path / "a.csv")])  # fmt: skip
    main([*ISSUE_QUESTION, "--out", str(tmp_path / "b.csv")])
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    res = run_planner(*ISSUE_QUESTION[:-1], "lots")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        "error: --extra-tokens: cannot read 'lots' as a token count (e.g. 250K, 1.5M, 2B, 4096, 5e10)"
    )


def test_help_explains_every_option_and_its_default():
    from stages.planner import build_parser

    parser = build_parser()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 25, action.dest
        if action.default is not None:
            assert "(default: %(default)" in action.help, action.dest  # the value argparse would use
    text = parser.format_help()
    assert "active parameters per token N_active" in text and "(default: 100)" in text and "(default: 0.005" in text
    assert "1B, 100B, 2T, 250K, 4096 or 5e10" in " ".join(text.split())


def test_warnings_are_one_block_with_each_reason_once():
    """A 7B dense model after 2T tokens is outside every fitted range of Table 2: 21 'warning:' lines before, most
    of them one input repeated per option; now a header that says how far out, then each reason once."""
    res = run_planner(
        "--fits", "liew2025", "--n1", "7B", "--n-active", "12B", "--d1", "2T", "--extra-tokens", "100B"
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0] == (
        "warnings: outside the fitted ranges by up to x7 for the options and x125 for the thresholds; each reason "
        "once, with the rows it concerns:"
    )
    assert all(line.startswith("  ") for line in lines[1:]) and len(set(lines)) == len(lines) == 13
    assert res.stderr.count("N1 = 7e+09") == 1 and (
        "  upcycle: N1 = 7e+09 is outside the fitted range [1e+08, 1e+09] (x7) (upcycle, threshold_same_tokens, "
        "threshold_same_compute)" in lines
    )
    assert lines[-1].startswith("  liew2025: Table 2 of Liew et al.")


def test_verdict_names_the_winner_and_its_margin_when_intervals_are_disjoint(fits):
    add_floor_bootstrap(fits, spread=0.002)
    t = plan(laws(fits), N1, NA, D1, 1e10, None, 100.0)[0].set_index("option")
    best, second = t.loc["scratch_same_tokens"], t.loc["upcycle"]  # 2.2939 vs 2.3084 (Table 2)
    assert best["loss_ci95_high"] < second["loss_ci95_low"]
    margin = second["predicted_loss"] - best["predicted_loss"]
    verdict = t.loc["verdict"]
    assert verdict["note"].startswith(
        f"scratch_same_tokens, lowest predicted loss within 1e+10 extra tokens, by {margin:.4g}"
    )
    assert "95% intervals disjoint" in verdict["note"]
    assert verdict["predicted_loss"] == best["predicted_loss"] and verdict["bootstrap_draws"] == 200


def test_an_option_beyond_the_budget_is_never_recommended(fits):
    table, _ = plan(laws(fits), N1, NA, D1, 1e10, 1e21, 100.0)
    t = table.set_index("option")
    options = table[table["kind"] == "option"].set_index("option")
    lowest = options["predicted_loss"].idxmin()
    assert t.loc[lowest, "within_budget"] == "no"  # the fresh 1e21-FLOP split, far beyond 1e10 extra tokens
    assert t.loc["scratch_same_compute", "within_budget"] == "no"  # spends the sunk compute again
    assert t.loc["scratch_same_compute", "note"].startswith("outside the budget")
    inside = options[options["within_budget"] == "yes"]
    assert set(inside.index) == {"upcycle", "scratch_same_tokens", "dense_continued"}
    winner = inside["predicted_loss"].idxmin()
    assert t.loc["verdict", "note"].startswith(f"{winner}, lowest predicted loss")
    assert t.loc["verdict", "predicted_loss"] == t.loc[winner, "predicted_loss"]
    assert "outside the budget, not considered: scratch_same_compute, optimal_split" in t.loc["verdict", "note"]
    # a FLOP budget as large as the total: the fresh split fits it and competes
    t = plan(laws(fits), N1, NA, D1, Budget(1e21, "flops"), 1e21, 100.0)[0].set_index("option")
    assert t.loc["optimal_split", "within_budget"] == "yes"


def test_liew2025_plans_at_llm_scale_from_the_published_table(tmp_path, capsys):
    """`--fits liew2025`: Table 2 built in; the losses match the paper's equations computed here by hand."""
    from stages.planner import main

    args = ["--fits", "liew2025", "--n1", "1e9", "--n-active", "1.6e9", "--d1", "1e10", "--extra-tokens", "1e10"]
    main([*args, "--out", str(tmp_path / "a.csv")])
    out = capsys.readouterr()
    t = pd.read_csv(tmp_path / "a.csv").set_index("option")
    assert t.loc["upcycle", "predicted_loss"] == pytest.approx(paper_upcycled(1e9, 1e10, 1e10), rel=1e-5)
    assert t.loc["upcycle", "predicted_loss"] == pytest.approx(2.3084, abs=1e-4)
    assert t.loc["scratch_same_tokens", "predicted_loss"] == pytest.approx(
        paper_chinchilla(32.0, 0.161, 7.05, 0.080, 1e9, 1e10), rel=1e-5
    )
    assert t.loc["dense_continued", "predicted_loss"] == pytest.approx(
        paper_chinchilla(8.83, 0.088, 12.3, 0.116, 1e9, 2e10), rel=1e-5
    )
    options = t[t["kind"] == "option"]
    assert np.isfinite(options["predicted_loss"]).all() and (options["extrapolation"] == 1.0).all()
    assert abs(math.log10(t.loc["threshold_same_tokens", "tokens_this_phase"]) - 9.85) < 0.025
    assert (t["bootstrap_draws"] == 0).all()
    verdict = t.loc["verdict", "note"]
    assert verdict.startswith("scratch_same_tokens, lowest predicted loss") and "no intervals" in verdict
    assert "liew2025" in t.loc["warning", "note"] and "approximate" in t.loc["warning", "note"]
    assert f"verdict: {verdict}" in out.out and "\n  liew2025: Table 2" in out.err
    main([*args, "--out", str(tmp_path / "b.csv")])
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # beyond the published range (N1 = 1e10 is 10x the paper's largest dense model): flagged, still predicted
    main(["--fits", "liew2025", "--n1", "1e10", "--n-active", "1.6e10", "--d1", "1e11", "--extra-tokens", "1e10"])
    assert "N1 = 1e+10 is outside the fitted range [1e+08, 1e+09] (x10)" in capsys.readouterr().err


def test_a_missing_law_makes_its_options_unavailable(tmp_path):
    from stages.planner import main

    out = tmp_path / "plan.csv"
    main(
        ["--fits", "liew2025", "--n1", "1e9", "--n-active", "1.6e9", "--d1", "1e10", "--extra-tokens", "1e10"]
        + ["--dense-fit", "dense_continuation", "--out", str(out)]
    )
    t = pd.read_csv(out).set_index("option")
    assert t.loc["dense_continued", "kind"] == "unavailable"
    assert "fit set liew2025 has no 'dense_continuation' law" in t.loc["dense_continued", "note"]
    assert math.isnan(t.loc["dense_continued", "predicted_loss"])


def run_planner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.planner", *args], cwd=REPO, capture_output=True, text=True)


def test_cli_writes_a_table_and_warns_on_extrapolation(fits, tmp_path):
    out = tmp_path / "plan.csv"
    res = run_planner(
        *("--fits", str(fits), "--n1", "1e9", "--n-active", "1.6e9", "--d1", "1e10"),
        *("--extra-flops", "1e20", "--total-flops", "1e21", "--out", str(out)),
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
        "verdict",
    }
    assert "\nverdict: " in res.stdout
    res = run_planner(
        "--fits", str(fits), "--n1", "1e9", "--n-active", "1.6e9", "--d1", "2e12", "--extra-tokens", "1e10"
    )
    assert res.returncode == 0 and "outside the fitted range [1e+09, 1e+12]" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--d1", "1e15", "--extra-tokens", "1e10"], "refusing to predict"),
        (["--d1", "1e10", "--extra-tokens", "0"], "--extra-tokens: token count must be positive"),
        (["--d1", "1e10", "--extra-tokens", "1e10", "--min-margin", "0"], "--min-margin: must be a positive number"),
        (
            ["--d1", "1e10", "--extra-tokens", "1e10", "--upcycled-fit", "missing"],
            "missing.json: no fit of the upcycled",
        ),
    ],
)
def test_cli_user_errors(fits, args, message):
    res = run_planner("--fits", str(fits), "--n1", "1e9", "--n-active", "1.6e9", *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_an_unknown_fit_set_is_a_user_error():
    res = run_planner("--fits", "liew2099", "--n1", "1e9", "--n-active", "1.6e9", "--d1", "1e10", "--extra-tokens", "1")
    assert res.returncode == 2 and "published fit set (liew2025)" in res.stderr


def test_bootstrap_resamples_give_intervals_around_the_point_estimate(fits):
    rng = np.random.default_rng(0)

    def edit(i, fit):
        fit["bootstrap"] = {
            "samples": [
                {k: v * (1 + 0.01 * rng.standard_normal()) for k, v in fit["params"].items()} for _ in range(40)
            ]
        }

    edit_fits(fits, edit)
    table, _ = plan(laws(fits), N1, NA, D1, 1e10, 1e21, 100.0)
    t = table.set_index("option")
    for option in ("upcycle", "scratch_same_tokens", "dense_continued", "optimal_split"):
        assert t.loc[option, "loss_ci95_low"] < t.loc[option, "predicted_loss"] < t.loc[option, "loss_ci95_high"]
        assert t.loc[option, "bootstrap_draws"] == 40
    low, high = t.loc["threshold_same_tokens", ["tokens_ci95_low", "tokens_ci95_high"]]
    assert low < t.loc["threshold_same_tokens", "tokens_this_phase"] < high


def test_every_crossing_is_reported():
    """Laws that tie twice (here at 1e5 and 1e8 tokens) give both roots; the note names the second one."""
    from stages.laws.crossing import crossings, threshold_note

    roots, upcycle_first = crossings(lambda x: (x - math.log(1e5)) * (x - math.log(1e8)))
    assert roots == pytest.approx([1e5, 1e8], rel=1e-8) and not upcycle_first
    assert threshold_note(roots, upcycle_first) == (
        "D2*: scratch wins below, upcycling above; the laws cross again at 1e+08"
    )
    assert crossings(lambda x: x * 0 - 1.0) == ([], True)


def test_threshold_figure_draws_the_tie_per_dense_size(fits, tmp_path):
    """Paper Fig. 1 right from the joint law: one D2* line per N1 and framing, bytes identical when redrawn."""
    from stages.figures import main
    from stages.report.plots.threshold import threshold

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
        sizes = {str(line.get_gid()).split(":")[1] for line in ax.get_lines() if str(line.get_gid()).startswith("tie:")}
        assert sizes == {"1e+08", "1e+09"}  # a D2* line per N1
    runs.to_csv(tmp_path / "runs.csv", index=False)
    fit_args = [a for name in ("upcycled", "scratch_chinchilla") for a in ("--fit", str(fits / f"{name}.json"))]
    blobs = []
    for i in range(2):
        main(["threshold", "--runs", str(tmp_path / "runs.csv"), *fit_args, "--out", str(tmp_path / f"t{i}")])
        blobs.append(((tmp_path / f"t{i}.png").read_bytes(), (tmp_path / f"t{i}.pdf").read_bytes()))
    assert blobs[0] == blobs[1]
