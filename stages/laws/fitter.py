"""Fit a law: multi-start L-BFGS-B with the analytic gradient, the best start polished by BFGS.

Every point of the law's start grid is a start (plus, for the upcycled laws, the profiled-floor OLS
solution); the optimiser always sees the summed objective, so a mean reduction changes only the reported
value, never the optimum. Starts run in this process or on a pool of spawned worker processes, with
OpenBLAS held to one thread either way. The start order and the reduction order are fixed, so the result
does not depend on the number of workers.
"""

from __future__ import annotations

import ctypes
import functools
import math
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from stages.core.cli import UserError
from stages.laws.forms import LOSS, Law, get_law
from stages.laws.objective import DEFAULT_DELTA, Problem, inf_if_nonfinite, make_problem
from stages.laws.regression import coefficients, ols
from stages.laws.table import check_frame

START_OPTIONS = {"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12}
POLISH_GTOL = 1e-10
L1_CONTINUATION = tuple(10.0**-k for k in range(3, 11))
AT_BEST_RTOL = 1e-9
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@functools.cache
def _openblas_setters() -> tuple[Any, ...]:
    """Each loaded OpenBLAS's per-thread thread-count setter, found once per process.

    Reading the memory map and opening the libraries took ~5 ms, paid per fit and per bootstrap chunk.
    numpy's and scipy's OpenBLAS are loaded when this module is imported, so the first answer holds.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()})
    except OSError:
        paths = []
    setters = []
    for path in paths:
        setter = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
        if setter is not None:
            setter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
            setters.append(setter)
    return tuple(setters)


@contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run OpenBLAS on one thread in this thread while optimising, then restore its setting.

    scipy's L-BFGS-B calls BLAS/LAPACK on 5x5 problems; waking OpenBLAS's thread pool for each call made
    multi-start fits 1.5x (idle machine) to 10x (busy machine) slower. Linux only; elsewhere a no-op.
    """
    restore = [(setter, setter(1)) for setter in _openblas_setters()]
    try:
        yield
    finally:
        for setter, previous in restore:
            setter(previous)


def _minimise_starts(problem: Problem, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS-B from each start; returns final objectives (inf when not finite) and points."""
    values, points = np.empty(len(starts)), np.empty_like(starts)
    with single_thread_blas(), np.errstate(all="ignore"):
        for i, x0 in enumerate(starts):
            res = optimize.minimize(problem, x0, jac=True, method="L-BFGS-B", options=START_OPTIONS)
            values[i], points[i] = inf_if_nonfinite(float(res.fun)), res.x
    return values, points


def polish(problem: Problem, x0: np.ndarray) -> tuple[np.ndarray, float, str]:
    """BFGS to a tight gradient (for l1, on a shrinking Huber); never returns a worse point."""
    start_value = inf_if_nonfinite(problem(x0)[0])
    with np.errstate(all="ignore"):
        if problem.objective == "l1":
            x, message = _l1_by_continuation(problem, x0)
        else:
            res = optimize.minimize(
                problem, x0, jac=True, method="BFGS", options={"gtol": POLISH_GTOL, "maxiter": 20000}
            )
            x, message = res.x, str(res.message)
    value = inf_if_nonfinite(problem(x)[0])
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


def chunks(n: int) -> list[slice]:
    """16 contiguous slices (fewer for small n), so that uneven work balances over a few workers."""
    bounds = np.linspace(0, n, min(n, 16) + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


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
    # every start's final objective (summed; inf when not finite) and point, in start order, for the
    # identifiability diagnostics (stages.laws.diagnostics); not written to the fit JSON
    start_values: np.ndarray | None = field(default=None, repr=False)
    start_points: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        hidden = ("theta", "problem", "start_values", "start_points")
        out = {k: v for k, v in self.__dict__.items() if k not in hidden}
        if self.objective_name == "mle":
            out["log_likelihood"] = -self.problem(self.theta)[0]
        return out


def grid_starts(law: Law, grid: int | None = None) -> np.ndarray:
    """The law's start grid, or ``grid`` starts evenly spaced through it (same order) for quick fits."""
    full = law.start_grid()
    if grid is None or grid >= len(full):
        return full
    if grid < 1:
        raise UserError(f"--grid: need at least 1 start, got {grid}")
    return full[np.unique(np.linspace(0, len(full) - 1, grid).round().astype(int))]


# the laws whose D-part is log-linear once the constant floor E is fixed: OLS formula and reported names
PROFILED = {
    "upcycled": ("logExcess ~ logD1 * logD2", {"logD1": "alpha1", "logD2": "alpha2", "logD1:logD2": "alpha3"}),
    "upcycled_no_interaction": ("logExcess ~ logD1 + logD2", {"logD1": "alpha1", "logD2": "alpha2"}),
}


def profiled_floor(law: Law, frame: pd.DataFrame) -> dict[str, Any] | None:
    """Variable projection: profile the floor E over (0, min L) with statsmodels OLS of log(L - E) inside.

    For the upcycled laws log(L - E) is linear in (log A, alpha1, alpha2, alpha3) once E is fixed, so the
    one-dimensional search over E finds a good joint start without any grid. The result seeds the joint
    Huber refit, which minimises error in log L rather than in log(L - E). Inside the search the residual
    sum of squares is a projection onto the formula's design (built once): a statsmodels formula fit per
    step cost as much as all the upcycled law's starts together; statsmodels fits once, at the floor found.
    """
    if law.name not in PROFILED or len(frame) < 5:
        return None
    formula, names = PROFILED[law.name]
    loss = frame[LOSS].to_numpy(float)
    data = pd.DataFrame({"logD1": np.log(frame["D1"].to_numpy(float)), "logD2": np.log(frame["D2"].to_numpy(float))})
    floor_max = float(loss.min())
    data["logExcess"] = np.log(loss)
    basis, sv, _ = np.linalg.svd(np.asarray(ols(formula, data).model.exog), full_matrices=False)
    basis = basis[:, sv > 1e-15 * sv.max()]  # the column space, as pinv sees it for a rank-deficient design

    def rss(share: float) -> float:
        y = np.log(loss - share * floor_max)
        resid = y - basis @ (basis.T @ y)
        return float(resid @ resid)

    with np.errstate(all="ignore"):
        best = optimize.minimize_scalar(rss, bounds=(0.0, 1.0 - 1e-6), method="bounded", options={"xatol": 1e-9})
    floor = float(best.x) * floor_max
    data["logExcess"] = np.log(loss - floor)
    res = ols(formula, data)
    reported = {"A": float(np.exp(res.params["Intercept"])), "E": max(floor, 1e-300)}
    for term, name in names.items():
        reported[name] = float(res.params[term]) if name == "alpha3" else float(-res.params[term])
    return {
        "formula": formula.replace("logExcess", "log(L - E)"),
        "E": floor,
        "rss": float(res.ssr),
        "as_law": reported,
        **coefficients(res),
    }


def fit_starts(
    law: Law, frame: pd.DataFrame, centres: dict[str, float], grid: int | None = None
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The internal starts of a fit (the profiled-floor solution first, where the law has one) and that solution.

    First, so that a tie keeps it; public so that a benchmark can run the very same starts.
    """
    starts = grid_starts(law, grid)
    profiled = profiled_floor(law, frame)
    if profiled is not None:
        starts = np.vstack([law.to_internal(profiled["as_law"], centres), starts])
    return starts, profiled


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
    starts, profiled = fit_starts(law, frame, centres, grid)
    starts = np.hstack([starts, np.zeros((len(starts), len(problem.extra_params)))])
    values, points = _run_starts(problem, starts, pool)
    best = int(np.argmin(values))
    with single_thread_blas():
        theta, value, message = polish(problem, points[best])
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
        start_values=values,
        start_points=points,
    )


def _run_starts(problem: Problem, starts: np.ndarray, pool: Executor | None) -> tuple[np.ndarray, np.ndarray]:
    if pool is None:
        return _minimise_starts(problem, starts)
    slices = chunks(len(starts))
    parts = list(pool.map(_minimise_starts, [problem] * len(slices), [starts[s] for s in slices]))
    return np.concatenate([v for v, _ in parts]), np.concatenate([p for _, p in parts])


def _law(name: str) -> Law:
    try:
        return get_law(name)
    except KeyError as err:
        raise UserError(err.args[0]) from None
