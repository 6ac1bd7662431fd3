"""Time the fitter against a plain scipy L-BFGS-B loop on the same problem and starts, in one run.

(a) ``stages.laws.fitter.fit_law`` in this process; (b) for each of the same starts, ``scipy.optimize.minimize``
(L-BFGS-B, ``jac=True``, the fitter's tolerances) on a straightforward numpy sum-Huber(1e-3) objective written
here from the law's formula, then the best start polished by BFGS as the fitter does. Both must reach the same
optimum; the ratio says how much the fitter's own machinery costs over the optimiser it drives (target <= 1.1).
Both sides run inside the fitter's single_thread_blas: OpenBLAS's thread pool on 5x5 problems would otherwise
time the machine's load rather than the code.

Data: Epoch AI's Chinchilla points (tests/data; Hoffmann's 4500-start grid) and, as no public D1 x D2 data
is at hand, the upcycled laws on a seeded synthetic D1 x D2 (x N1) grid at Liew et al. 2025's Table 2
"Upcycled" values (arXiv 2502.03009) with 0.1% log-normal noise.

    .venv/bin/python bench/fit_vs_scipy.py [--quick] [--repeat N] [--profile K]
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fit_chinchilla import epoch_rows
from scipy import optimize

from stages.laws.fitter import POLISH_GTOL, START_OPTIONS, FitResult, fit_law, fit_starts, single_thread_blas
from stages.laws.forms import LOSS, get_law

DELTA = 1e-3
# Liew et al. 2025, Table 2 "Upcycled" row: the synthetic D1 x D2 data's true parameters
UPCYCLED = {"A": 16.3, "alpha1": 0.043, "alpha2": 0.085, "alpha3": 7.98e-4, "B": 8.53, "beta": 0.112, "E": 0.165}
TOKENS = np.logspace(9, 12, 7)
OBJECTIVE_RTOL = 1e-9  # both sides' best objectives must agree to this
THETA_ATOL = 1e-3  # and their internal (log-space) parameters to this


def synthetic(law_name: str, grids: dict[str, np.ndarray], seed: int = 3) -> pd.DataFrame:
    """The law at Table 2's values on a product grid of its columns, with multiplicative log-normal noise."""
    law = get_law(law_name)
    frame = pd.DataFrame(list(itertools.product(*grids.values())), columns=list(grids))
    noise = np.random.default_rng(seed).normal(0.0, DELTA, len(frame))
    frame[LOSS] = np.exp(law.log_predict({k: UPCYCLED[k] for k in law.reported_params}, frame) + noise)
    return frame


def term_blocks(law_name: str, frame: pd.DataFrame) -> list[np.ndarray]:
    """Per term of log L = LSE(terms), its (row, parameter) design, written by hand from the law's formula.

    The upcycled laws centre each log column at its mean (the fitter's internal parameters), chinchilla does not.
    """
    logs = {c: np.log(frame[c].to_numpy(float)) for c in frame.columns if c != LOSS}
    one = np.ones(len(frame))
    if law_name == "chinchilla":  # LSE(a - alpha log N, b - beta log D, e)
        n, d = logs["N"], logs["D"]
        return [np.column_stack([one, -n]), np.column_stack([one, -d]), one[:, None]]
    u, v = (logs[c] - logs[c].mean() for c in ("D1", "D2"))
    blocks = [np.column_stack([one, -u, -v, u * v]), one[:, None]]  # a - alpha1 u - alpha2 v + alpha3 u v, e
    if law_name == "joint_upcycled":  # + (b - beta w)
        w = logs["N1"] - logs["N1"].mean()
        blocks.insert(1, np.column_stack([one, -w]))
    return blocks


def plain_objective(blocks: list[np.ndarray], log_loss: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """Sum of Huber(DELTA) on log residuals of LSE(terms) and its gradient, in plain numpy."""
    cuts = np.cumsum([b.shape[1] for b in blocks])[:-1]

    def value_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        terms = np.stack([x @ t for x, t in zip(blocks, np.split(theta, cuts), strict=True)])
        top = terms.max(axis=0)
        weight = np.exp(terms - top)
        total = weight.sum(axis=0)
        resid = top + np.log(total) - log_loss
        psi = np.clip(resid, -DELTA, DELTA)
        value = float(np.sum(psi * (resid - 0.5 * psi)))
        share = weight * (psi / total)
        return value, np.concatenate([x.T @ s for x, s in zip(blocks, share, strict=True)])

    return value_and_grad


def plain_fit(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], starts: np.ndarray) -> tuple[float, np.ndarray]:
    """L-BFGS-B from every start, then BFGS on the first best one; the best objective and its point."""
    best_value, best_x = np.inf, starts[0]
    with np.errstate(all="ignore"):
        for x0 in starts:
            res = optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", options=START_OPTIONS)
            if float(res.fun) < best_value:
                best_value, best_x = float(res.fun), res.x
        res = optimize.minimize(fun, best_x, jac=True, method="BFGS", options={"gtol": POLISH_GTOL, "maxiter": 20000})
    return (float(res.fun), res.x) if float(res.fun) <= best_value else (best_value, best_x)


@dataclass
class Case:
    law: str
    frame: pd.DataFrame
    grid: int | None
    repeat: int


@dataclass
class Timing:
    case: Case
    n_starts: int
    ours_s: float
    plain_s: float
    ours: FitResult
    plain_value: float
    plain_theta: np.ndarray

    @property
    def objective_rel(self) -> float:
        return abs(self.ours.objective - self.plain_value) / abs(self.plain_value)

    @property
    def theta_diff(self) -> float:
        return float(np.max(np.abs(self.ours.theta - self.plain_theta)))


def run_case(case: Case, profile: int) -> Timing:
    """Both sides on the case, alternating, ``case.repeat`` times each; the fastest time of each side."""
    law = get_law(case.law)
    starts, _ = fit_starts(law, case.frame, law.centres(case.frame), case.grid)
    fun = plain_objective(term_blocks(case.law, case.frame), np.log(case.frame[LOSS].to_numpy(float)))
    fit_law(case.frame, case.law, grid=1)  # warm-up: first-use imports (statsmodels) are not the fitter's cost
    plain_fit(fun, starts[:1])
    ours_s = plain_s = np.inf
    for _ in range(case.repeat):
        t0 = time.perf_counter()
        ours = fit_law(case.frame, case.law, grid=case.grid)
        t1 = time.perf_counter()
        plain_value, plain_theta = plain_fit(fun, starts)
        t2 = time.perf_counter()
        ours_s, plain_s = min(ours_s, t1 - t0), min(plain_s, t2 - t1)
    if profile:
        prof = cProfile.Profile()
        prof.runcall(fit_law, case.frame, case.law, grid=case.grid)
        print(f"# cProfile of fit_law({case.law}), top {profile} by own time:")
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(profile)
    return Timing(case, len(starts), ours_s, plain_s, ours, plain_value, plain_theta)


def cases(quick: bool, repeat: int | None) -> list[Case]:
    small = synthetic("upcycled", {"D1": TOKENS, "D2": TOKENS})
    joint = synthetic("joint_upcycled", {"N1": np.array([1e8, 3e8, 1e9, 3e9]), "D1": TOKENS, "D2": TOKENS})
    return [
        Case("chinchilla", epoch_rows(), 60 if quick else None, repeat or 1),
        Case("upcycled", small, None, repeat or (1 if quick else 5)),
        Case("joint_upcycled", joint, 24 if quick else None, repeat or (1 if quick else 3)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: a few starts, one repeat")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per side (fastest kept)")
    parser.add_argument("--profile", type=int, default=0, metavar="K", help="print fit_law's top-K cProfile rows")
    args = parser.parse_args()
    with single_thread_blas():
        timings = [run_case(c, args.profile) for c in cases(args.quick, args.repeat)]
    print("# fit_law vs plain scipy L-BFGS-B loop (same data, starts and tolerances; single process, 1 BLAS thread)")
    head = ("law", "points", "starts", "fit_law_s", "plain_s", "ratio", "fit_law_objective", "plain_objective")
    print(" | ".join(head) + " | max_abs_dtheta")
    failed = []
    for t in timings:
        row = (t.case.law, len(t.case.frame), t.n_starts, f"{t.ours_s:.3f}", f"{t.plain_s:.3f}")
        row += (f"{t.ours_s / t.plain_s:.2f}", f"{t.ours.objective:.12g}", f"{t.plain_value:.12g}")
        print(" | ".join(map(str, row)) + f" | {t.theta_diff:.2e}")
        if not (t.objective_rel <= OBJECTIVE_RTOL and t.theta_diff <= THETA_ATOL):
            failed.append(t.case.law)
    for t in timings:
        law = get_law(t.case.law)
        plain = law.to_reported(t.plain_theta, t.ours.centres)
        print(f"# {t.case.law} fit_law: " + ", ".join(f"{k}={v:.6g}" for k, v in t.ours.params.items()))
        print(f"# {t.case.law} plain:   " + ", ".join(f"{k}={v:.6g}" for k, v in plain.items()))
    total_ours, total_plain = sum(t.ours_s for t in timings), sum(t.plain_s for t in timings)
    print(f"# total: fit_law {total_ours:.2f} s, plain {total_plain:.2f} s, ratio {total_ours / total_plain:.2f}")
    if failed:
        raise SystemExit(f"error: fit_law and the plain loop disagree on {', '.join(failed)}")


if __name__ == "__main__":
    main()
