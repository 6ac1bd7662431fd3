"""Fit a scaling law to any table: multi-start L-BFGS-B, BFGS polish, cluster bootstrap, hold-out errors.

The default is Chinchilla Approach 3 done right (reference/fitting.md): log-sum-exp parameters, the SUM of
Huber(delta=1e-3) on log residuals, L-BFGS-B with the analytic gradient from every point of a start grid,
the best start polished by BFGS. The optimiser always sees the summed objective, so ``--reduction mean``
changes only the reported value, never the optimum (averaging with scipy's default tolerances is what
stopped Hoffmann et al.'s fit early). ``mle`` is Epoch's Huber log-likelihood with a free scale, which
degenerates to least absolute deviations; ``l1`` is that estimator stated directly.

Outputs are byte-deterministic: the start order, the reduction order and the bootstrap resamples are
fixed, and timings go to stdout only.

    python -m stages.fit --table runs.csv --law upcycled --map loss=val_loss --where "kind == 'upcycled'" \\
        --bootstrap 1000 --seed 0 --holdout "D2 > 1e9" --out results/fits/upcycled.json
"""

from __future__ import annotations

import argparse
import ctypes
import math
import multiprocessing
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special

from stages.core.artifacts import sha256_file, write_json, write_text
from stages.core.cli import ArgumentParser, UserError, run
from stages.laws.forms import LAWS, LOSS, Law, get_law

OBJECTIVES = ("huber", "l1", "mle")
DEFAULT_DELTA = 1e-3
START_OPTIONS = {"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12}
POLISH_GTOL = 1e-10
L1_CONTINUATION = tuple(10.0**-k for k in range(3, 11))
AT_BEST_RTOL = 1e-9
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# --- objective ---------------------------------------------------------------------------------------------


class Problem:
    """A law bound to data and an objective: summed loss over rows and its exact gradient.

    Rows carry integer weights so that a bootstrap resample is a weight vector, not a copied table.
    The parameter vector is the law's internal parameters followed by the objective's own (mle: log sigma).
    Features sit in a zero-padded (term, slot, row) block so that each term's log and each gradient entry
    is one vectorised product and sum (``np.add.reduceat`` and ``np.clip`` cost more than the math here).
    """

    def __init__(
        self,
        law: Law,
        features: np.ndarray,
        log_loss: np.ndarray,
        objective: str,
        delta: float,
        weights: np.ndarray | None = None,
    ) -> None:
        self.law, self.objective, self.delta = law, objective, float(delta)
        self.features = np.ascontiguousarray(features, float)
        self.log_loss = np.asarray(log_loss, float)
        self.weights = None if weights is None else np.asarray(weights, float)
        self.total_weight = float(len(self.log_loss) if weights is None else self.weights.sum())
        self.n_params = len(law.params)
        width = max(len(term) for term in law.terms)
        self.slots = law.term_of * width + (np.arange(self.n_params) - law.term_starts[law.term_of])
        self.padded = np.zeros((len(law.terms) * width, len(self.log_loss)))
        self.padded[self.slots] = self.features
        self.padded = self.padded.reshape(len(law.terms), width, -1)
        # Huber density normaliser Z(delta) = sqrt(2 pi) (1 - 2 Phi(-delta)) + 2 exp(-delta^2/2) / delta
        self.log_z = math.log(
            math.sqrt(2 * math.pi) * (1 - 2 * special.ndtr(-delta)) + 2 * math.exp(-(delta**2) / 2) / delta
        )

    @property
    def extra_params(self) -> tuple[str, ...]:
        return ("log_sigma",) if self.objective == "mle" else ()

    def with_weights(self, weights: np.ndarray) -> Problem:
        return Problem(self.law, self.features, self.log_loss, self.objective, self.delta, weights)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef = np.zeros(self.padded.shape[0] * self.padded.shape[1])
        coef[self.slots] = theta[: self.n_params]
        terms = (coef.reshape(self.padded.shape[:2])[:, :, None] * self.padded).sum(axis=1)
        top = terms.max(axis=0)
        expd = np.exp(terms - top)
        total = expd.sum(axis=0)
        resid = top + np.log(total) - self.log_loss
        value, d_resid, d_extra = self._loss(resid, theta[self.n_params :])
        grad = (self.padded * (expd * (d_resid / total))[:, None, :]).sum(axis=2).ravel()[self.slots]
        return value, np.concatenate([grad, d_extra])

    def _loss(self, r: np.ndarray, extra: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Summed loss, its derivative per residual and per extra parameter."""
        delta = self.delta
        if self.objective == "l1":
            return self._sum(np.abs(r)), self._times_w(np.sign(r)), extra[:0]
        sigma = float(np.exp(extra[0])) if self.objective == "mle" else 1.0
        z = r / sigma
        size = np.abs(z)
        clipped = np.minimum(size, delta)
        psi = self._times_w(np.copysign(clipped, z))
        huber = self._sum(clipped * (size - 0.5 * clipped))
        if self.objective == "huber":
            return huber, psi, extra[:0]
        value = huber + self.total_weight * (self.log_z + extra[0])
        d_log_sigma = self.total_weight - float((psi * z).sum())
        return value, psi / sigma, np.array([d_log_sigma])

    def _sum(self, per_row: np.ndarray) -> float:
        return float(per_row.sum() if self.weights is None else (per_row * self.weights).sum())

    def _times_w(self, per_row: np.ndarray) -> np.ndarray:
        return per_row if self.weights is None else per_row * self.weights


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


@contextmanager
def _single_thread_blas() -> Iterator[None]:
    """Run OpenBLAS on one thread in this thread while optimising, then restore its setting.

    scipy's L-BFGS-B calls BLAS/LAPACK on 5x5 problems; waking OpenBLAS's thread pool for each call made
    multi-start fits 1.5x (idle machine) to 10x (busy machine) slower. Linux only; elsewhere a no-op.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()})
    except OSError:
        paths = []
    restore = []
    for path in paths:
        setter = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
        if setter is not None:
            setter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
            restore.append((setter, setter(1)))
    try:
        yield
    finally:
        for setter, previous in restore:
            setter(previous)


def _minimise_starts(problem: Problem, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS-B from each start; returns final objectives (inf when not finite) and points."""
    values, points = np.empty(len(starts)), np.empty_like(starts)
    with _single_thread_blas(), np.errstate(all="ignore"):
        for i, x0 in enumerate(starts):
            res = optimize.minimize(problem, x0, jac=True, method="L-BFGS-B", options=START_OPTIONS)
            values[i], points[i] = _finite(float(res.fun)), res.x
    return values, points


def _polish(problem: Problem, x0: np.ndarray) -> tuple[np.ndarray, float, str]:
    """BFGS to a tight gradient (for l1, on a shrinking Huber); never returns a worse point."""
    start_value = _finite(problem(x0)[0])
    with np.errstate(all="ignore"):
        if problem.objective == "l1":
            x, message = _l1_by_continuation(problem, x0)
        else:
            res = optimize.minimize(
                problem, x0, jac=True, method="BFGS", options={"gtol": POLISH_GTOL, "maxiter": 20000}
            )
            x, message = res.x, str(res.message)
    value = _finite(problem(x)[0])
    if value <= start_value:
        return x, value, message
    return x0, start_value, f"kept the start: polish ended worse ({message})"


def _l1_by_continuation(problem: Problem, x0: np.ndarray) -> tuple[np.ndarray, str]:
    """|r| has no gradient at 0, so minimise Huber_d(r) / d (which tends to |r| - d/2) while d shrinks."""
    x, message = x0, ""
    for d in L1_CONTINUATION:
        smooth = Problem(problem.law, problem.features, problem.log_loss, "huber", d, problem.weights)
        res = optimize.minimize(
            lambda t, s=smooth, d=d: tuple(v / d for v in s(t)),
            x,
            jac=True,
            method="BFGS",
            options={"gtol": POLISH_GTOL, "maxiter": 20000},
        )
        x, message = res.x, f"Huber continuation down to delta {d:g}: {res.message}"
    return x, message


def _polish_many(problem: Problem, x0: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Warm-started polish of one problem per weight vector (a bootstrap chunk); NaN rows for failures."""
    out = np.full((len(weights), len(x0)), np.nan)
    with _single_thread_blas():
        for i, w in enumerate(weights):
            x, value, _ = _polish(problem.with_weights(w), x0)
            if math.isfinite(value):
                out[i] = x
    return out


@contextmanager
def worker_pool(workers: int) -> Iterator[Executor | None]:
    """Processes for starts and bootstrap refits, shared by the calls of one run; None (this process) for 1.

    Workers are spawned with single-threaded BLAS set before they import numpy. A script using this needs
    the usual ``if __name__ == "__main__":`` guard.
    """
    if workers <= 1:
        yield None
        return
    saved = {k: os.environ.get(k) for k in BLAS_ENV}
    os.environ.update(dict.fromkeys(BLAS_ENV, "1"))
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield pool
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _chunks(n: int) -> list[slice]:
    """16 contiguous slices (fewer for small n), so that uneven work balances over a few workers."""
    bounds = np.linspace(0, n, min(n, 16) + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# --- fitting -----------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """A fitted law: reported and internal parameters, the objective and how the optimum was reached."""

    law: str
    params: dict[str, float]
    internal: dict[str, float]
    centres: dict[str, float]
    objective_params: dict[str, float]
    objective: float
    objective_name: str
    reduction: str
    delta: float
    n_points: int
    n_starts: int
    n_starts_at_best: int
    polish: dict[str, Any]
    method: str
    theta: np.ndarray = field(repr=False)
    problem: Problem = field(repr=False)
    profiled_floor: dict[str, Any] | None = None  # the variable-projection start, where the law has one

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("theta", "problem")}
        if self.objective_name == "mle":
            out["log_likelihood"] = -self.problem(self.theta)[0]
        return out


def check_frame(frame: pd.DataFrame, law: Law, source: str = "table") -> None:
    """Raise a UserError naming the column and ``source`` unless every law column is finite and positive."""
    for col in (*law.columns, LOSS):
        if col not in frame.columns:
            raise UserError(
                f"{source}: missing column {col!r} needed by law {law.name} (needs {', '.join((*law.columns, LOSS))})"
            )
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(float)
        for bad, what in ((~np.isfinite(values), "non-finite or non-numeric"), (values <= 0, "non-positive")):
            if bad.any():
                first = frame.index[np.flatnonzero(bad)[0]]
                raise UserError(
                    f"{source}: column {col!r} has {int(bad.sum())} {what} value(s) "
                    f"(first at data row {first}: {frame[col].loc[first]!r}); values must be > 0"
                )


def grid_starts(law: Law, grid: int | None = None) -> np.ndarray:
    """The law's start grid, or ``grid`` starts evenly spaced through it (same order) for quick fits."""
    full = law.start_grid()
    if grid is None or grid >= len(full):
        return full
    if grid < 1:
        raise UserError(f"--grid: need at least 1 start, got {grid}")
    return full[np.unique(np.linspace(0, len(full) - 1, grid).round().astype(int))]


def make_problem(
    frame: pd.DataFrame,
    law: Law,
    objective: str = "huber",
    delta: float = DEFAULT_DELTA,
    centres: Mapping[str, float] | None = None,
) -> Problem:
    if objective not in OBJECTIVES:
        raise UserError(f"--objective: unknown {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if not delta > 0:
        raise UserError(f"--delta: must be > 0, got {delta}")
    centres = law.centres(frame) if centres is None else centres
    features = law.features(frame, centres)
    return Problem(law, features, np.log(frame[LOSS].to_numpy(float)), objective, delta)


# the laws whose D-part is log-linear once the constant floor E is fixed: OLS formula and reported names
PROFILED = {
    "upcycled": ("logExcess ~ logD1 * logD2", {"logD1": "alpha1", "logD2": "alpha2", "logD1:logD2": "alpha3"}),
    "upcycled_no_interaction": ("logExcess ~ logD1 + logD2", {"logD1": "alpha1", "logD2": "alpha2"}),
}


def profiled_floor(law: Law, frame: pd.DataFrame) -> dict[str, Any] | None:
    """Variable projection: profile the floor E over (0, min L) with statsmodels OLS of log(L - E) inside.

    For the upcycled laws log(L - E) is linear in (log A, alpha1, alpha2, alpha3) once E is fixed, so the
    one-dimensional search over E finds a good joint start without any grid (reference/fitting.md 7.5). The
    result seeds the joint Huber refit, which minimises error in log L rather than in log(L - E).
    """
    if law.name not in PROFILED or len(frame) < 5:
        return None
    formula, names = PROFILED[law.name]
    loss = frame[LOSS].to_numpy(float)
    data = pd.DataFrame({"logD1": np.log(frame["D1"].to_numpy(float)), "logD2": np.log(frame["D2"].to_numpy(float))})
    floor_max = float(loss.min())

    def rss(share: float) -> float:
        data["logExcess"] = np.log(loss - share * floor_max)
        return float(_ols(formula, data).ssr)

    with np.errstate(all="ignore"):
        best = optimize.minimize_scalar(rss, bounds=(0.0, 1.0 - 1e-6), method="bounded", options={"xatol": 1e-9})
    floor = float(best.x) * floor_max
    data["logExcess"] = np.log(loss - floor)
    res = _ols(formula, data)
    reported = {"A": float(np.exp(res.params["Intercept"])), "E": max(floor, 1e-300)}
    for term, name in names.items():
        reported[name] = float(res.params[term]) if name == "alpha3" else float(-res.params[term])
    return {"formula": formula.replace("logExcess", "log(L - E)"), "E": floor, "rss": float(res.ssr),
            "as_law": reported, **_coefficients(res)}


def fit_law(
    frame: pd.DataFrame,
    law_name: str,
    *,
    objective: str = "huber",
    delta: float = DEFAULT_DELTA,
    reduction: str = "sum",
    grid: int | None = None,
    pool: Executor | None = None,
    source: str = "table",
) -> FitResult:
    """Fit ``law_name`` to ``frame`` (columns named as the law's, plus ``loss``) from every grid start.

    ``grid`` None uses the law's full start grid; starts run on ``pool`` (see :func:`worker_pool`) if given.
    """
    law = _law(law_name)
    if reduction not in ("sum", "mean"):
        raise UserError(f"--reduction: must be sum or mean, got {reduction!r}")
    check_frame(frame, law, source)
    centres = law.centres(frame)
    problem = make_problem(frame, law, objective, delta, centres)
    n_free = problem.n_params + len(problem.extra_params)
    if len(frame) < n_free:
        raise UserError(
            f"{source}: {len(frame)} point(s) to fit but law {law.name} with objective {objective} "
            f"has {n_free} parameters"
        )
    starts = grid_starts(law, grid)
    profiled = profiled_floor(law, frame)
    if profiled is not None:  # the profiled-floor solution is one more start (first, so ties keep it)
        starts = np.vstack([law.to_internal(profiled["as_law"], centres), starts])
    starts = np.hstack([starts, np.zeros((len(starts), len(problem.extra_params)))])
    values, points = _run_starts(problem, starts, pool)
    best = int(np.argmin(values))
    with _single_thread_blas():
        theta, value, message = _polish(problem, points[best])
    if not math.isfinite(value):
        raise UserError(f"{source}: no start of law {law.name} reached a finite objective")
    at_best = int(np.sum(values <= value + AT_BEST_RTOL * abs(value)))
    polisher = f"BFGS (gtol {POLISH_GTOL:g})" + (
        " on Huber(delta)/delta as delta shrinks to 1e-10" if objective == "l1" else ""
    )
    return FitResult(
        law=law.name,
        params=law.to_reported(theta[: problem.n_params], centres),
        internal=dict(zip(law.params, map(float, theta[: problem.n_params]), strict=True)),
        centres=centres,
        objective_params=dict(zip(problem.extra_params, map(float, theta[problem.n_params :]), strict=True)),
        objective=value / (len(frame) if reduction == "mean" else 1),
        objective_name=objective,
        reduction=reduction,
        delta=float(delta),
        n_points=len(frame),
        n_starts=len(starts),
        n_starts_at_best=at_best,
        polish={"message": message, "gradient_inf_norm": float(np.max(np.abs(problem(theta)[1])))},
        method=f"L-BFGS-B with analytic gradient from {len(starts)} starts ("
        + ("the profiled-floor OLS solution and " if profiled is not None else "")
        + "the law's start grid) on the log-sum-exp "
        f"parameters, best start polished with {polisher}; the optimiser sees the summed objective",
        theta=theta,
        problem=problem,
        profiled_floor=profiled,
    )


def _run_starts(problem: Problem, starts: np.ndarray, pool: Executor | None) -> tuple[np.ndarray, np.ndarray]:
    if pool is None:
        return _minimise_starts(problem, starts)
    slices = _chunks(len(starts))
    parts = list(pool.map(_minimise_starts, [problem] * len(slices), [starts[s] for s in slices]))
    return np.concatenate([v for v, _ in parts]), np.concatenate([p for _, p in parts])


def _law(name: str) -> Law:
    try:
        return get_law(name)
    except KeyError as err:
        raise UserError(err.args[0]) from None


def predict(law_name: str, params: Mapping[str, float], frame: pd.DataFrame) -> np.ndarray:
    """Predicted loss at each row of ``frame`` from reported parameters (e.g. a fit JSON's ``params``)."""
    return np.exp(get_law(law_name).log_predict(params, frame))


def fit_quality(law: Law, params: Mapping[str, float], frame: pd.DataFrame) -> dict[str, float]:
    """RMSE of log loss and mean absolute relative error of loss."""
    pred = law.log_predict(params, frame)
    observed = np.log(frame[LOSS].to_numpy(float))
    return {
        "rmse_log": float(np.sqrt(np.mean((pred - observed) ** 2))),
        "mean_abs_rel_err": float(np.mean(np.abs(np.expm1(pred - observed)))),
        "max_abs_log_residual": float(np.max(np.abs(pred - observed))),
    }


def sanity_checks(law: Law, params: Mapping[str, float], frame: pd.DataFrame) -> dict[str, bool]:
    """Fitting.md's checks: the constant floor sits below every loss and the decay exponents are positive."""
    constant = [all(not m.variables for m in term) for term in law.terms]
    floor = float(np.exp(law.log_terms(params, frame.iloc[:1]))[constant].sum())
    decays = [m.param for m in law.monomials if m.variables and m.sign < 0]
    return {
        "floor_below_min_loss": bool(floor < frame[LOSS].min()),
        "exponents_positive": bool(all(params[p] > 0 for p in decays)),
    }


# --- bootstrap ---------------------------------------------------------------------------------------------


def bootstrap(
    fit: FitResult,
    n: int,
    seed: int,
    groups: Sequence[Any] | None = None,
    pool: Executor | None = None,
    derived_frame: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Resample clusters (runs) with replacement ``n`` times; refit each, warm-started from the full fit.

    Percentile 95% intervals and standard deviations for the parameters and for the law's derived
    quantities (evaluated on ``derived_frame``, e.g. alpha_eff at each D1 of the table).
    """
    law = get_law(fit.law)
    if n < 2:
        raise UserError(f"--bootstrap: needs at least 2 resamples, got {n}")
    codes = np.arange(fit.n_points) if groups is None else pd.factorize(pd.Series(list(groups)), sort=False)[0]
    n_groups = int(codes.max()) + 1
    if n_groups < 2:
        raise UserError(f"--bootstrap: needs at least 2 groups to resample, found {n_groups}")
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[codes] for _ in range(n)])
    if pool is None:
        thetas = _polish_many(fit.problem, fit.theta, weights)
    else:
        slices = _chunks(n)
        chunks = pool.map(
            _polish_many, [fit.problem] * len(slices), [fit.theta] * len(slices), [weights[s] for s in slices]
        )
        thetas = np.concatenate(list(chunks))
    ok = np.all(np.isfinite(thetas), axis=1)
    samples = [law.to_reported(t[: fit.problem.n_params], fit.centres) for t in thetas[ok]]
    table = pd.DataFrame(samples, columns=list(law.reported_params))
    if law.derived is not None and derived_frame is not None:
        table = table.join(pd.DataFrame([law.derived(s, derived_frame) for s in samples], index=table.index))
    # a degenerate resample (e.g. a coefficient running off to infinity on a few points) must not break the
    # summary: statistics use each column's finite values, and the count of the others is reported
    table = table.apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
    finite = {c: table[c].dropna() for c in table.columns}
    with np.errstate(over="ignore"):
        se = {c: float(v.std(ddof=1)) if len(v) > 1 else None for c, v in finite.items()}
    return {
        "n": n,
        "n_failed": int((~ok).sum()),
        "n_nonfinite": {c: int(len(table) - len(v)) for c, v in finite.items() if len(v) < len(table)},
        "seed": seed,
        "n_groups": n_groups,
        "se": se,
        "ci95": {c: [float(v.quantile(0.025)), float(v.quantile(0.975))] if len(v) > 1 else None
                 for c, v in finite.items()},
        "samples": [{k: _finite(float(v)) for k, v in s.items()} for s in samples],  # for prediction bands
        "method": "cluster bootstrap: groups drawn with replacement (numpy default_rng(seed)), each resample "
        "refit by BFGS warm-started from the full-data optimum; SD and 2.5/97.5 percentiles",
    }


# --- hold-out and statsmodels diagnostics ------------------------------------------------------------------


def holdout_report(
    law: Law, params: Mapping[str, float], frame: pd.DataFrame, query: str, keep: Sequence[str] = ("run_id",)
) -> dict[str, Any]:
    """Predictions and errors on the held-out rows."""
    pred = np.exp(law.log_predict(params, frame))
    observed = frame[LOSS].to_numpy(float)
    rows = []
    for i in range(len(frame)):
        row: dict[str, Any] = {c: frame[c].iloc[i] for c in keep if c in frame.columns}
        row.update({c: float(frame[c].iloc[i]) for c in (*law.columns, LOSS)})
        row.update(predicted=float(pred[i]), rel_err=float((pred[i] - observed[i]) / observed[i]))
        rows.append(row)
    return {"query": query, "n": len(frame), "rows": rows, **fit_quality(law, params, frame)}


def _ols(formula: str, data: pd.DataFrame) -> Any:
    import statsmodels.formula.api as smf

    return smf.ols(formula, data).fit()


def _rlm(formula: str, data: pd.DataFrame) -> Any:
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    return smf.rlm(formula, data, M=sm.robust.norms.HuberT()).fit()


def _coefficients(res: Any) -> dict[str, Any]:
    return {
        "params": {k: float(v) for k, v in res.params.items()},
        "se": {k: float(v) for k, v in res.bse.items()},
        "r2": float(res.rsquared),
        "n": int(res.nobs),
    }


def statsmodels_report(law: Law, params: Mapping[str, float], frame: pd.DataFrame) -> tuple[dict[str, Any], str]:
    """OLS diagnostics for the two-stage laws: per-D1 power laws in D2 and the bilinear log form at the fit.

    The floor is the sum of the terms without D2 (E; plus B N1^-beta for the joint law), so that
    log(L - floor) ~ logD1 * logD2 is exactly the law's D-term; its standard errors are conditional on the
    fitted floor. Returns the JSON block and the text summaries.
    """
    if not {"D1", "D2"} <= set(law.columns):
        return {}, f"law {law.name}: no statsmodels diagnostics (they serve the two-stage D1, D2 laws)\n"
    has_d2 = [any("D2" in m.variables for m in term) for term in law.terms]
    floor = np.exp(law.log_terms(params, frame))[[not t for t in has_d2]].sum(axis=0)
    d1, d2, loss = (frame[c].to_numpy(float) for c in ("D1", "D2", LOSS))
    data = pd.DataFrame(
        {"D1": d1, "logL": np.log(loss), "logD1": np.log(d1), "logD2": np.log(d2), "excess": loss - floor}
    )
    positive = data["excess"].to_numpy() > 0
    data["logExcess"] = np.log(np.where(positive, data["excess"], np.nan))
    out: dict[str, Any] = {"per_D1": [], "floor": "sum of the fitted terms without D2"}
    texts = []
    for value, part in data.groupby("D1", sort=True):
        if part["logD2"].nunique() < 3:
            continue
        res = _ols("logL ~ logD2", part)
        entry = {
            "D1": float(value),
            "n": len(part),
            "slope_log_loss": float(res.params["logD2"]),
            "slope_log_loss_se": float(res.bse["logD2"]),
        }
        texts.append(f"per-D1 power law, D1 = {entry['D1']:g}: log L ~ log D2\n{_summary_text(res)}")
        if bool(positive[part.index].all()):
            res = _ols("logExcess ~ logD2", part)
            entry.update(slope_log_excess=float(res.params["logD2"]), slope_log_excess_se=float(res.bse["logD2"]))
        out["per_D1"].append(entry)
    two_stage = interaction_from_slopes(out["per_D1"])
    if two_stage:
        out["alpha3_two_stage"] = two_stage
    if positive.all() and len(data) > 4:
        res = _ols("logExcess ~ logD1 * logD2", data)
        out["bilinear"] = {
            "formula": "log(L - floor) ~ logD1 * logD2",
            **_coefficients(res),
            "as_law": {
                "A": float(np.exp(res.params["Intercept"])),
                "alpha1": float(-res.params["logD1"]),
                "alpha2": float(-res.params["logD2"]),
                "alpha3": float(res.params["logD1:logD2"]),
            },
        }
        texts.append(f"bilinear form at the fitted floor: log(L - floor) ~ logD1 * logD2\n{_summary_text(res)}")
        robust = _rlm("logExcess ~ logD1 * logD2", data)
        out["bilinear_rlm"] = {
            "formula": "log(L - floor) ~ logD1 * logD2, Huber T (t = 1.345 robust-scale units, not delta = 1e-3)",
            "params": {k: float(v) for k, v in robust.params.items()},
            "se": {k: float(v) for k, v in robust.bse.items()},
        }
        texts.append(f"robust (RLM, Huber T) bilinear form at the fitted floor\n{_summary_text(robust)}")
    else:
        out["bilinear"] = {"skipped": f"{int((~positive).sum())} row(s) with loss <= fitted floor"}
    return out, "\n\n".join(texts) + "\n"


def interaction_from_slopes(per_d1: list[dict[str, Any]]) -> dict[str, Any]:
    """alpha3 by two stages: the per-D1 exponents alpha_eff(D1) regressed on ln D1 (WLS, 1/se^2 weights).

    The law says alpha_eff(D1) = alpha2 - alpha3 ln D1, so the slope is -alpha3. This uses each D1's own
    within-D1 fit, so it does not trade the interaction off against A, alpha1 and the floor the way the joint
    fit's bootstrap does; it is the direct test of "does the D2 exponent fall with D1". Two variants: exponents
    of L - floor (the law's D-term at the fitted floor) and of L itself (no floor: a lower bound on the exponents).
    Needs at least 3 D1 values; the 95% interval uses Student t with (number of D1 values - 2) dof.
    """
    import statsmodels.api as sm
    from scipy import stats

    out: dict[str, Any] = {}
    for variant, key in (("log_excess", "slope_log_excess"), ("log_loss", "slope_log_loss")):
        rows = [r for r in per_d1 if key in r and r[f"{key}_se"] > 0]
        if len(rows) < 3 or len(rows) != len(per_d1):
            continue
        alpha_eff = -np.array([r[key] for r in rows])
        se = np.array([r[f"{key}_se"] for r in rows])
        design = sm.add_constant(np.log([r["D1"] for r in rows]))
        res = sm.WLS(alpha_eff, design, weights=1.0 / se**2).fit()
        alpha3, alpha3_se = float(-res.params[1]), float(res.bse[1])
        t = float(stats.t.ppf(0.975, len(rows) - 2))
        out[variant] = {"alpha3": alpha3, "se": alpha3_se, "ci95": [alpha3 - t * alpha3_se, alpha3 + t * alpha3_se],
                        "alpha2": float(res.params[0]), "n_D1": len(rows)}
    return out


def _summary_text(res: Any) -> str:
    """statsmodels' summary without its date and time lines' values (outputs must be byte-deterministic)."""
    with warnings.catch_warnings():  # normality tests warn below 8 points; the numbers are still printed
        warnings.simplefilter("ignore")
        text = str(res.summary())
    return re.sub(
        r"^(Date:|Time:)(\s+)(\S.*?)(\s{2,})", lambda m: m[1] + m[2] + "-" * len(m[3]) + m[4], text, flags=re.M
    )


# --- command line ------------------------------------------------------------------------------------------


def read_table(path: str) -> pd.DataFrame:
    """Read a CSV or Parquet table; any failure is a one-line user error naming the file."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise UserError(f"{path}: unsupported table format {suffix or '(none)'!r}; use .csv or .parquet")
    try:
        return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except Exception as err:  # pandas/pyarrow raise many types for corrupt files
        message = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"{path}: cannot read table ({message})") from None


def parse_map(spec: str | None, law: Law) -> dict[str, str]:
    """``N=N_active,loss=val_loss`` -> {law column: table column}."""
    mapping: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise UserError(f"--map: expected LAW_COLUMN=TABLE_COLUMN, got {item!r}")
        if key not in (*law.columns, LOSS):
            raise UserError(f"--map: {key!r} is not a column of law {law.name} ({', '.join((*law.columns, LOSS))})")
        mapping[key] = value
    return mapping


def select(frame: pd.DataFrame, query: str, flag: str, source: str) -> np.ndarray:
    """Boolean row mask of a pandas query, or a one-line user error."""
    try:
        mask = frame.eval(query)
    except Exception as err:  # pandas raises many types for bad expressions
        raise UserError(f"{flag} {query!r} on {source}: {' '.join(str(err).split()) or type(err).__name__}") from None
    if not isinstance(mask, pd.Series) or mask.dtype != bool:
        raise UserError(f"{flag} {query!r} on {source}: not a true/false condition on rows")
    return mask.to_numpy()


def prepare(table: pd.DataFrame, law: Law, mapping: Mapping[str, str], where: str | None, source: str) -> pd.DataFrame:
    """The table plus the law's columns (mapped from table columns), filtered by ``where`` and checked."""
    frame = table.copy()
    for law_col, table_col in mapping.items():
        if table_col not in table.columns:
            raise UserError(f"{source}: missing column {table_col!r} (mapped to {law_col} by --map)")
        frame[law_col] = table[table_col]
    if where:
        frame = frame[select(frame, where, "--where", source)]
        if frame.empty:
            raise UserError(f"--where {where!r} on {source}: no rows left")
    check_frame(frame, law, source)
    for col in (*law.columns, LOSS):
        frame[col] = pd.to_numeric(frame[col]).astype(float)
    return frame.reset_index(drop=True)


def build_parser() -> ArgumentParser:
    laws = "\n".join(f"  {law.name:30} {', '.join((*law.columns, LOSS)):18} {law.formula}" for law in LAWS.values())
    p = ArgumentParser(
        prog="python -m stages.fit",
        description=__doc__.split("\n\n")[0],
        epilog=f"laws (name, columns, form; natural logs, raw token and parameter counts):\n{laws}\n"
        "P is the sparsity N_total / N_active; N1 the parameters of the dense model that was upcycled.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--table", required=True, help="CSV or Parquet table with the law's columns (see --map)")
    p.add_argument("--law", required=True, choices=sorted(LAWS), metavar="LAW", help="law to fit (see below)")
    p.add_argument("--out", required=True, help="fit JSON to write")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="cluster-bootstrap resamples (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (numpy default_rng)")
    p.add_argument("--holdout", help="pandas query; matching rows are left out of the fit and predicted")
    p.add_argument("--where", help="pandas query applied first: only matching rows are used at all")
    p.add_argument(
        "--map",
        help="law columns from table columns, e.g. N=N_active,D=D,loss=val_loss; --where and --holdout "
        "see the table's columns plus these law names",
    )
    p.add_argument("--group", help="bootstrap cluster column (default: run_id if present, else rows)")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="huber",
        help="huber: sum of Huber(delta) on log residuals (default); l1: sum |log residual|; "
        "mle: Huber log-likelihood with free scale (Epoch AI)",
    )
    p.add_argument("--delta", type=float, default=DEFAULT_DELTA, help="Huber threshold on log residuals")
    p.add_argument(
        "--reduction",
        choices=("sum", "mean"),
        default="sum",
        help="how the reported objective is reduced over rows (the optimum does not depend on it)",
    )
    p.add_argument(
        "--grid",
        default="default",
        help="'default' (the law's full start grid) or N: N starts evenly spaced through it",
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes for starts/bootstrap")
    p.add_argument("--summary", help="also write the statsmodels text summaries here")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    for flag, value, low in (("--bootstrap", args.bootstrap, 0), ("--workers", args.workers, 1)):
        if value < low:
            raise UserError(f"{flag}: must be >= {low}, got {value}")
    if args.grid == "default":
        grid = None
    elif args.grid.isdigit():
        grid = int(args.grid)
    else:
        raise UserError(f"--grid: expected 'default' or a number of starts, got {args.grid!r}")
    law = get_law(args.law)
    mapping = parse_map(args.map, law)
    frame = prepare(read_table(args.table), law, mapping, args.where, args.table)
    group = args.group or ("run_id" if "run_id" in frame.columns else None)
    if group is not None and group not in frame.columns:
        raise UserError(f"{args.table}: missing column {group!r} given by --group")

    held = np.zeros(len(frame), bool)
    if args.holdout:
        held = select(frame, args.holdout, "--holdout", args.table)
        if held.all():
            raise UserError(f"--holdout {args.holdout!r} on {args.table}: removes all rows from the fit")
        if not held.any():
            raise UserError(f"--holdout {args.holdout!r} on {args.table}: matches no rows")
    train = frame[~held].reset_index(drop=True)

    with worker_pool(args.workers) as pool:
        t0 = time.perf_counter()
        fit = fit_law(
            train,
            law.name,
            objective=args.objective,
            delta=args.delta,
            reduction=args.reduction,
            grid=grid,
            pool=pool,
            source=args.table,
        )
        t1 = time.perf_counter()
        out: dict[str, Any] = {
            **fit.as_dict(),
            "formula": law.formula,
            "columns": {c: mapping.get(c, c) for c in (*law.columns, LOSS)},
            "table": args.table,
            "table_sha256": sha256_file(args.table),
            "where": args.where,
            "grid": args.grid,
            "ranges": {c: [float(train[c].min()), float(train[c].max())] for c in law.columns},
            "fit": fit_quality(law, fit.params, train),
            "checks": sanity_checks(law, fit.params, train),
            "holdout": holdout_report(law, fit.params, frame[held], args.holdout) if args.holdout else None,
        }
        if law.derived is not None:
            out["derived"] = law.derived(fit.params, frame)
        if args.bootstrap:
            groups = train[group] if group else None
            out["bootstrap"] = {
                **bootstrap(fit, args.bootstrap, args.seed, groups, pool, frame),
                "group": group or "row",
            }
    t2 = time.perf_counter()
    sm, text = statsmodels_report(law, fit.params, train)
    if sm:
        out["statsmodels"] = sm
    if args.summary:
        write_text(args.summary, text)
    write_json(args.out, out)
    print(
        f"fit {law.name} ({args.objective}): {fit.n_points} points, {fit.n_starts} starts "
        f"({fit.n_starts_at_best} at best), objective {fit.objective:.12g}, {t1 - t0:.2f} s"
        + (f"; bootstrap {args.bootstrap}: {t2 - t1:.2f} s" if args.bootstrap else "")
    )
    print("  " + ", ".join(f"{k}={v:.6g}" for k, v in fit.params.items()))


if __name__ == "__main__":
    run(main)
