"""Tests for stages.laws and stages.fit: published Chinchilla fits, invariances, recovery, CLI contract.

The Chinchilla fits use 150 starts evenly spaced through Hoffmann's 4500-point grid (CI time); the full
grid is the CLI default and is timed in bench/fit_chinchilla.py.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from stages.fit import build_parser, fit_options
from stages.laws.bootstrap import bootstrap
from stages.laws.diagnostics import fit_diagnostics
from stages.laws.fitter import fit_law, grid_starts, worker_pool
from stages.laws.forms import LAWS, LOSS, get_law, predict
from stages.laws.objective import make_problem

DATA = Path(__file__).parent / "data" / "chinchilla_epoch_extracted.csv"
TEST_GRID = 150
# Hoffmann et al.'s unrounded parameters (a, alpha, b, beta, e), as in Epoch's notebook
HOFFMANN = {"A": np.exp(6.0073404), "alpha": 0.33917084, "B": np.exp(6.0179186), "beta": 0.2849083, "E": 1.6934}
# Table 2 "Upcycled" row of Liew et al. 2025 (arXiv 2502.03009)
UPCYCLED = {"A": 16.3, "alpha1": 0.043, "alpha2": 0.085, "alpha3": 7.98e-4, "B": 8.53, "beta": 0.112, "E": 0.165}
TOKENS = np.logspace(9, 12, 7)


def chinchilla_rows() -> pd.DataFrame:
    """Epoch's preprocessing: D = C / (6 N); drop the 5 highest losses (240 rows remain)."""
    raw = pd.read_csv(DATA)
    frame = pd.DataFrame(
        {"N": raw["Model Size"], "D": raw["Training FLOP"] / (6 * raw["Model Size"]), "loss": raw["loss"]}
    )
    return frame[frame["loss"] < np.sort(frame["loss"].to_numpy())[-5]].reset_index(drop=True)


def synthetic(law_name: str, grids: dict[str, list[float]], seed: int, sigma: float = 1e-3) -> pd.DataFrame:
    """The law at Table 2's values on a product grid, with multiplicative log-normal noise."""
    law = get_law(law_name)
    frame = pd.DataFrame(list(itertools.product(*grids.values())), columns=list(grids))
    noise = np.random.default_rng(seed).normal(0.0, sigma, len(frame))
    frame[LOSS] = np.exp(law.log_predict({k: UPCYCLED[k] for k in law.reported_params}, frame) + noise)
    return frame


@pytest.fixture(scope="module")
def chinchilla() -> pd.DataFrame:
    frame = chinchilla_rows()
    assert len(frame) == 240
    return frame


@pytest.fixture(scope="module")
def huber_fit(chinchilla):
    return fit_law(chinchilla, "chinchilla", grid=TEST_GRID)


def test_data_copy_is_the_attributed_file():
    import hashlib

    digest = hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert digest == "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"
    assert digest in (DATA.parent / "README.md").read_text()


def test_default_grid_is_hoffmanns_4500_points():
    law = get_law("chinchilla")
    grid = grid_starts(law)
    assert grid.shape == (4500, 5)
    values = {p: sorted(set(grid[:, i])) for i, p in enumerate(law.params)}
    assert values["alpha"] == values["beta"] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert values["e"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert values["a"] == values["b"] == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    args = build_parser().parse_args(["--table", "t.csv", "--law", "chinchilla", "--out", "f.json"])
    assert fit_options(args).grid == "default"


def test_sum_huber_reproduces_approach_3(huber_fit):
    p = huber_fit.params
    assert p["alpha"] == pytest.approx(0.34731, abs=2e-4)
    assert p["beta"] == pytest.approx(0.36718, abs=2e-4)
    assert p["E"] == pytest.approx(1.81724, abs=2e-4)
    assert p["A"] == pytest.approx(477.84, rel=5e-3)
    assert p["B"] == pytest.approx(2143.9, rel=5e-3)
    # Epoch's cell 18 reached 0.0010182740346; a converged fitter is at or a hair below it
    assert huber_fit.objective == pytest.approx(0.0010182740346, rel=2e-8)
    assert huber_fit.objective <= 0.0010182740346
    assert huber_fit.n_starts == TEST_GRID
    assert huber_fit.n_starts_at_best >= 2
    assert huber_fit.polish["gradient_inf_norm"] < 1e-6


def test_mle_reproduces_epoch_headline(chinchilla):
    fit = fit_law(chinchilla, "chinchilla", objective="mle", grid=TEST_GRID)
    p = fit.params
    assert p["alpha"] == pytest.approx(0.34781, abs=2e-4)
    assert p["beta"] == pytest.approx(0.36585, abs=2e-4)
    assert p["E"] == pytest.approx(1.81686, abs=2e-4)
    assert p["A"] == pytest.approx(482.006, rel=5e-3)
    assert p["B"] == pytest.approx(2085.43, rel=5e-3)
    assert fit.as_dict()["log_likelihood"] == pytest.approx(879.77, abs=0.01)
    assert fit.objective_params["log_sigma"] == pytest.approx(-12.2666, abs=1e-3)


def test_l1_equals_the_mle_limit(chinchilla):
    p = fit_law(chinchilla, "chinchilla", objective="l1", grid=40).params
    assert p["alpha"] == pytest.approx(0.34781, abs=2e-4)
    assert p["E"] == pytest.approx(1.81686, abs=2e-4)
    assert p["B"] == pytest.approx(2085.43, rel=5e-3)


def test_mean_reduction_gives_the_same_optimum(chinchilla, huber_fit):
    mean = fit_law(chinchilla, "chinchilla", grid=TEST_GRID, reduction="mean")
    for name, value in huber_fit.params.items():
        assert mean.params[name] == pytest.approx(value, rel=1e-9)
    assert mean.objective * len(chinchilla) == pytest.approx(huber_fit.objective, rel=1e-12)


def test_averaged_huber_with_default_tolerances_is_the_pitfall(chinchilla, huber_fit):
    """Why the invariance matters: a naive mean objective stops early (Epoch's explanation of Hoffmann)."""
    law = get_law("chinchilla")
    problem = make_problem(chinchilla, law)
    start = law.to_internal(HOFFMANN, law.centres(chinchilla))
    res = optimize.minimize(
        lambda x: tuple(v / len(chinchilla) for v in problem(x)), start, jac=True, method="L-BFGS-B"
    )
    stopped = law.to_reported(res.x, law.centres(chinchilla))
    assert abs(stopped["beta"] - huber_fit.params["beta"]) > 0.01


def test_bootstrap_standard_errors_match_epoch(huber_fit):
    """Epoch: 4000 resamples; 400 keep the Monte Carlo error of an SE near 4% (about 6 s on 2 cores)."""
    with worker_pool(2) as pool:
        boot = bootstrap(huber_fit, 400, seed=42, pool=pool)
    assert boot["n_failed"] == 0
    for name, published in (("alpha", 0.0154), ("beta", 0.0206), ("E", 0.0257)):
        assert boot["se"][name] == pytest.approx(published, rel=0.15), name
    lo, hi = boot["ci95"]["alpha"]
    assert lo < huber_fit.params["alpha"] < hi
    # a healthy bootstrap: every interval reported, no resample with a parameter at a bound
    assert boot["ci95_null"] == {} and boot["health"]["n_clusters"] == 240
    assert set(boot["health"]["at_bound_share"].values()) == {0.0} and boot["health"]["failed_share"] == 0.0
    assert fit_diagnostics(huber_fit, chinchilla_rows(), boot)["summary"] == "ok"


def test_public_chinchilla_fit_is_diagnosed_ok(huber_fit, chinchilla):
    """Epoch's fit is identified: inside every bound, the near-best starts agree, local SEs are small."""
    diag = fit_diagnostics(huber_fit, chinchilla)
    assert diag["summary"] == "ok" and diag["flags"] == []
    assert {b["bound"] for b in diag["bounds"].values()} == {None}
    ident = diag["identifiability"]
    assert ident["n_near_best"] >= huber_fit.n_starts_at_best >= 2
    assert max(ident["relative_spread"].values()) < 1e-4  # the starts agree to ~1e-6
    # local (Gauss-Newton) SEs of log A, log B, log E, alpha/alpha, beta/beta against Epoch's bootstrap SEs
    # (log-space a 0.258, b 0.421, e 0.014; alpha 0.0154, beta 0.0206): within a factor 3, all well below 1
    local = ident["hessian"]["relative_se"]
    epoch = {"A": 0.258, "B": 0.421, "E": 0.014, "alpha": 0.0154 / 0.3473, "beta": 0.0206 / 0.3672}
    for name, se in epoch.items():
        assert se / 3 < local[name] < se * 3, (name, local[name], se)
    assert ident["hessian"]["flat"] == [] and ident["hessian"]["dof"] == 235


@pytest.mark.parametrize("law_name", sorted(LAWS))
@pytest.mark.parametrize("objective", ["huber", "mle", "l1"])
def test_analytic_gradient_matches_finite_differences(law_name, objective):
    law = get_law(law_name)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({c: np.exp(rng.uniform(1.0, 4.0 if c == "P" else 25.0, 40)) for c in law.columns})
    frame[LOSS] = rng.uniform(2.0, 4.0, 40)
    problem = make_problem(frame, law, objective, delta=0.05).with_weights(rng.integers(0, 3, 40))
    theta = np.concatenate([rng.normal(0.0, 0.3, len(law.params)), [-2.0] if objective == "mle" else []])
    grad = problem(theta)[1]
    step = 1e-6
    numeric = [(problem(theta + step * e)[0] - problem(theta - step * e)[0]) / (2 * step) for e in np.eye(len(theta))]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("law_name", sorted(LAWS))
def test_centred_parameters_are_a_reparameterisation(law_name):
    law = get_law(law_name)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({c: np.exp(rng.uniform(0.0, 4.0 if c == "P" else 25.0, 30)) for c in law.columns})
    reported = {
        name: float(rng.uniform(1.0, 20.0)) if name in law.exp_params.values() else float(rng.uniform(0.0, 0.3))
        for name in law.reported_params
    }
    if "alpha3" in reported or "c" in reported:
        reported["alpha3" if "alpha3" in reported else "c"] = 1e-3
    centres = law.centres(frame)
    internal = law.to_internal(reported, centres)
    assert law.to_reported(internal, centres) == pytest.approx(reported, rel=1e-10)
    centred = np.logaddexp.reduce(law.terms_log(internal, law.features(frame, centres)), axis=0)
    np.testing.assert_allclose(centred, law.log_predict(reported, frame), rtol=1e-12)
    np.testing.assert_allclose(predict(law_name, reported, frame), np.exp(centred), rtol=1e-12)


@pytest.mark.parametrize("law_name", sorted(LAWS))
def test_every_law_recovers_its_own_noiseless_data(law_name):
    law = get_law(law_name)
    grids = {
        "N": np.logspace(8, 10, 5),
        "N1": [1e8, 1e9, 1e10],
        "P": [1, 2, 4, 8, 16],
        "N_active": np.logspace(7.5, 9.5, 5),
    }
    values = {"alpha": 0.3, "E": 0.5, "d1": 2.0, "a": 0.1, "b": 0.12, "c": 0.002, "d2": 1.0, "d3": -0.7}
    truth = {k: {**UPCYCLED, **values}[k] for k in law.reported_params}
    frame = pd.DataFrame(
        list(itertools.product(*(grids.get(c, TOKENS[::2]) for c in law.columns))), columns=law.columns
    )
    frame[LOSS] = predict(law_name, truth, frame)
    fit = fit_law(frame, law_name, grid=30)
    assert fit.params == pytest.approx(truth, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize(
    ("law_name", "grids", "workers"),
    [
        ("upcycled", {"D1": TOKENS, "D2": TOKENS}, 1),
        ("joint_upcycled", {"N1": [1e8, 3e8, 1e9, 3e9], "D1": TOKENS[::2], "D2": TOKENS[::2]}, 2),
    ],
)
def test_synthetic_recovery_inside_bootstrap_intervals(law_name, grids, workers):
    frame = synthetic(law_name, grids, seed=0)
    with worker_pool(workers) as pool:
        fit = fit_law(frame, law_name, pool=pool)
        boot = bootstrap(fit, 200, seed=1, pool=pool, derived_frame=frame)
    assert boot["n_failed"] == 0
    for name in get_law(law_name).reported_params:
        lo, hi = boot["ci95"][name]
        assert lo <= UPCYCLED[name] <= hi, (name, lo, UPCYCLED[name], hi)
    assert fit.params["alpha3"] > 0 and boot["ci95"]["alpha3"][0] > 0
    key = "alpha_eff(D1=1000000000)"
    assert boot["ci95"][key][0] <= UPCYCLED["alpha2"] - UPCYCLED["alpha3"] * np.log(1e9) <= boot["ci95"][key][1]


# --- command line ------------------------------------------------------------------------------------------


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stages.fit", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        check=False,
    )


@pytest.fixture(scope="module")
def runs_table(tmp_path_factory) -> Path:
    """A pipeline-like table: upcycled runs (two rows per run), dense rows with D2 = 0 to be filtered out."""
    up = synthetic("upcycled", {"D1": TOKENS, "D2": TOKENS}, seed=3).rename(columns={LOSS: "val_loss"})
    up["kind"], up["run_id"] = "upcycled", [f"up{i // 2}" for i in range(len(up))]
    dense = pd.DataFrame({"D1": TOKENS, "D2": 0.0, "val_loss": 2.5, "kind": "dense"})
    dense["run_id"] = [f"dense{i}" for i in range(len(dense))]
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    pd.concat([up, dense], ignore_index=True).to_csv(path, index=False)
    return path


def test_cli_fit_holdout_bootstrap_and_determinism(runs_table, tmp_path):
    common = [
        "--table", runs_table, "--law", "upcycled", "--map", "loss=val_loss", "--where", "kind == 'upcycled'",
        "--holdout", "D2 >= 1e12", "--bootstrap", "40", "--seed", "3",
    ]  # fmt: skip
    one = run_cli(*common, "--workers", "1", "--out", tmp_path / "one.json", "--summary", tmp_path / "one.txt")
    two = run_cli(*common, "--workers", "2", "--out", tmp_path / "two.json", "--summary", tmp_path / "two.txt")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    assert (tmp_path / "one.txt").read_bytes() == (tmp_path / "two.txt").read_bytes()
    text = (tmp_path / "one.json").read_text()
    assert str(tmp_path) not in text and "seconds" not in text

    out = json.loads(text)
    assert out["law"] == "upcycled" and out["columns"]["loss"] == "val_loss"
    assert out["n_points"] == 42
    assert out["n_starts"] == len(get_law("upcycled").start_grid()) + 1  # + the profiled-floor start
    assert out["profiled_floor"]["as_law"]["E"] > 0 and "bilinear_rlm" in out["statsmodels"]
    assert set(out["params"]) == {"A", "alpha1", "alpha2", "alpha3", "E"}
    assert out["bootstrap"]["group"] == "run_id" and out["bootstrap"]["n_groups"] == 24
    assert set(out["bootstrap"]["ci95"]) >= {"alpha3", "alpha_eff(D1=1000000000)"}
    assert len([k for k in out["derived"] if k.startswith("alpha_eff")]) == len(TOKENS)
    assert out["diagnostics"]["summary"] == "ok" and out["diagnostics"]["bootstrap"]["n_clusters"] == 24
    assert out["bootstrap"]["ci95_null"] == {} and "fit WARNING" not in one.stderr

    held = out["holdout"]
    assert held["n"] == len(TOKENS) and held["query"] == "D2 >= 1e12"
    rows = pd.DataFrame(held["rows"])
    np.testing.assert_allclose(rows["predicted"], predict("upcycled", out["params"], rows), rtol=1e-12)
    log_err = np.log(rows["predicted"] / rows[LOSS])
    assert held["rmse_log"] == pytest.approx(float(np.sqrt(np.mean(log_err**2))), rel=1e-9)
    assert 0 < held["mean_abs_rel_err"] < 0.01

    sm = out["statsmodels"]
    assert len(sm["per_D1"]) == len(TOKENS)
    for entry in sm["per_D1"]:
        alpha_eff = out["derived"][f"alpha_eff(D1={np.format_float_positional(entry['D1'], trim='-')})"]
        assert -entry["slope_log_excess"] == pytest.approx(alpha_eff, abs=5 * entry["slope_log_excess_se"] + 1e-3)
    assert sm["bilinear"]["as_law"]["alpha3"] == pytest.approx(out["params"]["alpha3"], rel=0.2)
    assert "logD1:logD2" in sm["bilinear"]["se"]
    two_stage = sm["alpha3_two_stage"]["log_excess"]  # alpha_eff(D1) regressed on ln D1
    assert two_stage["n_D1"] == len(TOKENS)
    assert two_stage["ci95"][0] <= UPCYCLED["alpha3"] <= two_stage["ci95"][1]
    assert two_stage["alpha3"] == pytest.approx(out["params"]["alpha3"], rel=0.2)


@pytest.fixture(scope="module")
def small_table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "t.csv"
    chinchilla_rows().iloc[:12].to_csv(path, index=False)
    return path


def write(tmp_path: Path, name: str, frame: pd.DataFrame) -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def bad_tables(tmp_path: Path, good: Path) -> list[tuple[list[str], list[str]]]:
    """(arguments, words the one-line error must contain)."""
    frame = pd.read_csv(good)
    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"not a parquet file")
    return [
        (["--table", good, "--law", "chinchila"], ["--law", "chinchilla", "joint_upcycled"]),
        (["--table", write(tmp_path, "nod.csv", frame.drop(columns="D")), "--law", "chinchilla"], ["'D'", "nod.csv"]),
        (
            ["--table", write(tmp_path, "neg.csv", frame.assign(D=frame["D"].where(frame.index != 4, -1.0))),
             "--law", "chinchilla"],
            ["'D'", "non-positive", "neg.csv", "row 4"],
        ),
        (
            ["--table", write(tmp_path, "nan.csv", frame.assign(loss=frame["loss"].where(frame.index != 2))),
             "--law", "chinchilla"],
            ["'loss'", "non-finite", "nan.csv"],
        ),
        (["--table", write(tmp_path, "few.csv", frame.iloc[:3]), "--law", "chinchilla"], ["few.csv", "3 point(s)"]),
        (["--table", good, "--law", "chinchilla", "--holdout", "nosuch > 1"], ["--holdout", "nosuch"]),
        (["--table", good, "--law", "chinchilla", "--holdout", "N > 0"], ["--holdout", "removes all rows"]),
        (["--table", good, "--law", "chinchilla", "--where", "N < 0"], ["--where", "no rows"]),
        (["--table", good, "--law", "chinchilla", "--map", "N=params"], ["'params'", "--map", "t.csv"]),
        (["--table", tmp_path / "missing.csv", "--law", "chinchilla"], ["missing.csv", "not found"]),
        (["--table", garbage, "--law", "chinchilla"], ["bad.parquet", "cannot read"]),
    ]  # fmt: skip


def test_cli_user_errors_are_one_line_exit_2(small_table, tmp_path):
    for args, words in bad_tables(tmp_path, small_table):
        res = run_cli(*args, "--out", tmp_path / "f.json", "--grid", "5", "--workers", "1")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, (args, res.stderr)
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        for word in words:
            assert word in lines[0], (word, lines[0])
        assert not (tmp_path / "f.json").exists()


def test_two_stage_interaction_is_the_slope_of_alpha_eff_in_ln_d1():
    from stages.laws.quality import interaction_from_slopes

    wiggle = [0.004, -0.003, 0.002, -0.004, 0.001]
    rows = [
        {
            "D1": d1,
            "slope_log_excess": -(0.3 - 0.02 * np.log(d1)) + w,
            "slope_log_excess_se": 0.01,
            "slope_log_loss": -0.1 + w,
            "slope_log_loss_se": 0.01,
        }
        for d1, w in zip(TOKENS[:5], wiggle, strict=True)
    ]
    out = interaction_from_slopes(rows)
    assert out["log_excess"]["alpha3"] == pytest.approx(0.02, abs=2e-3) and out["log_excess"]["n_D1"] == 5
    lo, hi = out["log_excess"]["ci95"]
    assert lo < 0.02 < hi and lo > 0
    assert out["log_loss"]["ci95"][0] < 0 < out["log_loss"]["ci95"][1]  # flat exponents: no interaction
    assert interaction_from_slopes(rows[:2]) == {}
