"""Fits that say when they fail: synthetic data built to break a fit is flagged, a clean fit is "ok".

Each case is small (<= 49 points, <= 200 starts) so the file runs in seconds; the public Chinchilla fit's
diagnostics are checked in tests/test_fit.py next to its published values.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_fit import run_cli

from stages.laws import diagnostics
from stages.laws.bootstrap import bootstrap
from stages.laws.diagnostics import fit_diagnostics, null_intervals
from stages.laws.fitter import fit_law
from stages.laws.forms import COEFFICIENT, EXPONENT, FLOOR, INTERACTION, LAWS, LOSS, get_law

# Hoffmann et al.'s rounded Chinchilla law: the truth of the synthetic cases
TRUTH = {"A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28, "E": 1.69}
WIDE_N, WIDE_D = np.logspace(8, 11, 7), np.logspace(9, 12, 7)
GRID = 150


def chinchilla_data(n_values, d_values, sigma: float = 1e-3, seed: int = 0, **truth: float) -> pd.DataFrame:
    """The Chinchilla law on an (N, D) product grid with multiplicative log-normal noise."""
    frame = pd.DataFrame(list(itertools.product(n_values, d_values)), columns=["N", "D"])
    noise = np.random.default_rng(seed).normal(0.0, sigma, len(frame))
    frame[LOSS] = np.exp(get_law("chinchilla").log_predict({**TRUTH, **truth}, frame) + noise)
    return frame


def diagnose(frame: pd.DataFrame, law: str = "chinchilla", grid: int | None = GRID, **boot):
    fit = fit_law(frame, law, grid=grid)
    result = bootstrap(fit, seed=0, **boot) if boot else None
    return fit, result, fit_diagnostics(fit, frame, result)


def test_every_law_has_a_role_for_every_parameter():
    expected = {
        "chinchilla": {"A": COEFFICIENT, "alpha": EXPONENT, "B": COEFFICIENT, "beta": EXPONENT, "E": FLOOR},
        "upcycled": {"A": COEFFICIENT, "alpha1": EXPONENT, "alpha2": EXPONENT, "alpha3": INTERACTION, "E": FLOOR},
        "sparsity": {"d1": COEFFICIENT, "a": EXPONENT, "b": EXPONENT, "c": INTERACTION, "d3": FLOOR},
        "joint_upcycled": {
            "A": COEFFICIENT, "alpha1": EXPONENT, "alpha2": EXPONENT, "alpha3": INTERACTION,
            "B": COEFFICIENT, "beta": EXPONENT, "E": FLOOR,
        },
    }  # fmt: skip
    for name, law in LAWS.items():
        assert list(law.roles) == list(law.reported_params), name
        if name in expected:
            assert law.roles == expected[name], name
        assert sum(role == FLOOR for role in law.roles.values()) == 1, name


def test_clean_synthetic_chinchilla_is_ok():
    frame = chinchilla_data(WIDE_N, WIDE_D)
    fit, boot, diag = diagnose(frame, n=100)
    assert diag["summary"] == "ok" and diag["short"] == "ok" and diag["flags"] == []
    assert fit.params["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.02)
    assert fit.params["E"] == pytest.approx(TRUTH["E"], abs=0.02)
    ident = diag["identifiability"]
    assert ident["not_identified"] == {} and ident["n_near_best"] >= 2
    assert max(ident["hessian"]["relative_se"].values()) < 0.1
    assert all(b["bound"] is None for b in diag["bounds"].values())
    assert boot["ci95_null"] == {} and max(boot["health"]["at_bound_share"].values()) == 0.0
    for name in TRUTH:
        lo, hi = boot["ci95"][name]
        assert lo < fit.params[name] < hi, name


def test_data_without_a_floor_collapse_it_and_are_flagged():
    """A pure power law L = 50 N^-0.05 D^-0.05 has no floor: E runs to ~exp(-180) and must be called so."""
    frame = pd.DataFrame(list(itertools.product(WIDE_N, WIDE_D)), columns=["N", "D"])
    noise = np.random.default_rng(0).normal(0.0, 1e-3, len(frame))
    frame[LOSS] = 50 * frame["N"] ** -0.05 * frame["D"] ** -0.05 * np.exp(noise)
    fit, boot, diag = diagnose(frame, n=40)
    assert fit.params["E"] < 1e-6 * frame[LOSS].min()
    assert diag["bounds"]["E"]["bound"] == "collapsed"
    assert "collapsed: E" in diag["flags"]
    assert set(diag["identifiability"]["not_identified"]["E"]) >= {"flat"}
    assert diag["identifiability"]["hessian"]["flat"] == ["E"]
    # the bootstrap warm-started at the collapsed floor never moves it: no [x, x] interval, flagged instead
    assert boot["ci95"]["E"] is None and boot["ci95_null"]["E"].startswith("zero width")
    assert boot["health"]["at_bound_share"]["E"] == 1.0
    assert "bootstrap zero-width: E" in diag["flags"] and "bootstrap at bound: E 100%" in diag["flags"]
    assert diag["short"] == "collapsed: E"  # each parameter named once


def test_a_too_narrow_n_range_leaves_a_and_alpha_unidentified():
    """N over 1.5x only: the N-term's curvature is invisible, so A and alpha trade off along a ridge."""
    frame = chinchilla_data(np.geomspace(1e9, 1.5e9, 4), WIDE_D, sigma=5e-3, seed=1)
    fit, _, diag = diagnose(frame)
    ident = diag["identifiability"]
    assert set(ident["not_identified"]) == {"A", "alpha"}
    assert ident["hessian"]["relative_se"]["A"] > 1 and ident["hessian"]["relative_se"]["alpha"] > 1
    assert ident["hessian"]["relative_se"]["beta"] < 0.1  # D spans 3 decades: beta is fine
    assert diag["short"] == "not identified: A, alpha"
    # the same data over the wide N range are identified
    assert diagnose(chinchilla_data(WIDE_N, WIDE_D, sigma=5e-3, seed=1))[2]["summary"] == "ok"


def test_bootstrap_over_two_clusters_reports_no_interval():
    frame = chinchilla_data(WIDE_N, WIDE_D)
    groups = np.where(frame["N"] > 1e9, "big", "small")
    _, boot, diag = diagnose(frame, n=30, groups=groups)
    assert boot["n_groups"] == 2 and boot["health"]["n_clusters"] == 2
    assert all(v is None for v in boot["ci95"].values())  # every column, derived ones included
    assert set(boot["ci95_null"]) == set(boot["ci95"]) and "2 clusters < 5" in boot["ci95_null"]["alpha"]
    assert len(boot["samples"]) == 30  # the resamples are still there to inspect
    assert "bootstrap: 2 clusters < 5" in diag["flags"] and diag["short"] == "bootstrap: 2 clusters"


def test_null_intervals():
    ci = {"x": [1.0, 2.0], "e": [2.2e-99, 2.2e-99], "z": [0.0, 0.0], "f": [5.0, 5.0 + 1e-9], "n": None}
    reasons = null_intervals(ci, n_groups=9)
    assert ci == {"x": [1.0, 2.0], "e": None, "z": None, "f": None, "n": None}
    assert set(reasons) == {"e", "z", "f", "n"} and reasons["e"].startswith("zero width")
    ci = {"x": [1.0, 2.0]}
    assert "4 clusters < 5" in null_intervals(ci, n_groups=4)["x"] and ci["x"] is None
    assert null_intervals({"x": [1.0, 2.0]}, n_groups=diagnostics.MIN_CLUSTERS) == {}


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # B = exp(log B) overflows to inf: the point
def test_diverged_additive_law_is_flagged():
    """Losses flat in D2 except one step at the smallest D2: B D2^-alpha2 becomes a wall (B ~ 1e300+)."""
    tokens = [1e9, 2e9, 4e9, 8e9]
    frame = pd.DataFrame(list(itertools.product(tokens, tokens)), columns=["D1", "D2"])
    frame[LOSS] = 2 + 10 * frame["D1"] ** -0.1 + np.where(frame["D2"] == tokens[0], 0.3, 0.0)
    fit, _, diag = diagnose(frame, law="upcycled_additive", grid=None)
    assert not fit.params["B"] < 1e12  # inf when exp(log B) overflows
    assert diag["bounds"]["B"]["bound"] == "> 1e12" and diag["bounds"]["B"]["log_value"] > np.log(1e12)
    assert diag["bounds"]["alpha2"]["bound"] == "> 3"
    assert "at bound: B > 1e12, alpha2 > 3" in diag["flags"]
    # the same law on data it describes is fine
    frame[LOSS] = 2 + 10 * frame["D1"] ** -0.1 + 40 * frame["D2"] ** -0.2
    assert diagnose(frame, law="upcycled_additive", grid=None)[2]["summary"] == "ok"


def test_jacobian_is_the_derivative_of_the_log_prediction():
    law = get_law("joint_upcycled")
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({c: np.exp(rng.uniform(15.0, 25.0, 12)) for c in law.columns})
    features = law.features(frame, law.centres(frame))
    theta = rng.normal(0.0, 0.3, len(law.params))

    def log_pred(t):
        return np.logaddexp.reduce(law.terms_log(t, features), axis=0)

    numeric = np.stack(
        [(log_pred(theta + 1e-6 * e) - log_pred(theta - 1e-6 * e)) / 2e-6 for e in np.eye(len(theta))], axis=1
    )
    np.testing.assert_allclose(diagnostics._jacobian(law, theta, features), numeric, rtol=1e-6, atol=1e-9)


# --- the command, the table, the figures ---------------------------------------------------------------------


run_fit = run_cli  # the same subprocess call as the fit command-line tests


@pytest.fixture(scope="module")
def five_points(tmp_path_factory) -> Path:
    """5 points rising slightly with N: the fit needs alpha < 0 and has no residual degree of freedom."""
    n = np.array([1e8, 3e8, 1e9, 3e9, 1e10])
    d = np.array([2e10, 1e10, 5e10, 2e11, 1e11])
    path = tmp_path_factory.mktemp("five") / "five.csv"
    pd.DataFrame({"N": n, "D": d, "loss": 2 + 400 * d**-0.3 + 0.02 * np.log(n / 1e8)}).to_csv(path, index=False)
    return path


def test_cli_says_a_flagged_fit_loudly_and_strict_makes_it_an_error(five_points, tmp_path):
    common = ["--table", five_points, "--law", "chinchilla", "--grid", "50", "--workers", "1"]
    res = run_fit(*common, "--out", tmp_path / "f.json")
    assert res.returncode == 0, res.stderr
    warning = res.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("fit WARNING: ") and "alpha <= 0" in warning[0]
    assert "no residual dof" in warning[0]
    out = json.loads((tmp_path / "f.json").read_text())
    assert out["diagnostics"]["bounds"]["alpha"] == {"role": "exponent", "value": pytest.approx(-0.00975, abs=1e-4),
                                                     "bound": "<= 0"}  # fmt: skip
    assert out["checks"]["exponents_positive"] is False  # the old check agrees; it just never said so
    assert "diagnostics: " + out["diagnostics"]["summary"] in res.stdout

    strict = run_fit(*common, "--strict", "--out", tmp_path / "g.json")
    assert strict.returncode == 1
    lines = strict.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fit FAILED: ") and "alpha <= 0" in lines[0]
    assert (tmp_path / "g.json").read_bytes() == (tmp_path / "f.json").read_bytes()  # written all the same
    usage = run_fit("--help").stdout
    assert "--strict" in usage and "Exit status: 0 for a fit, also a flagged one" in usage


def test_ok_fit_is_silent_on_stderr(tmp_path):
    path = tmp_path / "clean.csv"
    chinchilla_data(WIDE_N, WIDE_D).to_csv(path, index=False)
    res = run_fit("--table", path, "--law", "chinchilla", "--grid", "60", "--workers", "1", "--out", tmp_path / "f")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "diagnostics: ok" in res.stdout
    assert json.loads((tmp_path / "f").read_text())["diagnostics"]["summary"] == "ok"


def test_fit_table_and_figure_titles_say_what_is_flagged(tmp_path):
    from stages.report.fit_table import fit_row, markdown
    from stages.report.plots.fit_checks import residuals
    from stages.report.plots.labels import flagged

    frame = pd.DataFrame(list(itertools.product(WIDE_N, WIDE_D)), columns=["N", "D"])
    frame[LOSS] = 50 * frame["N"] ** -0.05 * frame["D"] ** -0.05
    fit, _, diag = diagnose(frame, grid=40)
    bad = {"law": "chinchilla", "params": fit.params, "n_points": fit.n_points, "fit": {"rmse_log": 0.01},
           "columns": {"N": "N", "D": "D", "loss": "loss"}, "diagnostics": diag}  # fmt: skip
    good = {**bad, "diagnostics": {**diag, "short": "ok"}}
    old = {k: v for k, v in bad.items() if k != "diagnostics"}  # a fit JSON from before diagnostics
    rows = [fit_row("bad", bad), fit_row("good", good), fit_row("old", old)]
    assert [r["diagnostics"] for r in rows] == ["collapsed: E", "ok", ""]
    lines = markdown(pd.DataFrame(rows)).splitlines()
    assert lines[0].endswith("| diagnostics |") and lines[2].endswith("| collapsed: E |")
    assert lines[3].endswith("| ok |")

    assert flagged(bad) == " (collapsed: E)" and flagged(good) == "" and flagged(old) == ""
    fig = residuals(frame, {"bad": bad, "good": good})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["bad\n(collapsed: E)", "bad\n(collapsed: E)", "good", "good"]
