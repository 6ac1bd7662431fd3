"""Cluster bootstrap of a fit: groups (runs) resampled with replacement, each resample refit warm-started.

A resample is a vector of integer row weights on the fit's own problem, not a copied table; refits run in
chunks on the fit's worker pool in a fixed order, so the summary does not depend on the number of workers.

An interval that is no interval is reported as null with the reason in ``ci95_null``: every interval when
there are fewer than ``MIN_CLUSTERS`` clusters, and any zero-width one (a parameter that never moved from the
warm start, e.g. a collapsed floor). ``health`` says how many resamples failed or put a parameter at a bound
(stages.laws.diagnostics defines the bounds and thresholds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
import pandas as pd

from stages.core.cli import UserError
from stages.laws.diagnostics import bootstrap_health, null_intervals
from stages.laws.fitter import FitResult, chunks, polish, single_thread_blas
from stages.laws.forms import get_law
from stages.laws.objective import Problem, inf_if_nonfinite


def _polish_many(problem: Problem, x0: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Warm-started polish of one problem per weight vector (a bootstrap chunk); NaN rows for failures."""
    out = np.full((len(weights), len(x0)), np.nan)
    with single_thread_blas():
        for i, w in enumerate(weights):
            x, value, _ = polish(problem.with_weights(w), x0)
            if math.isfinite(value):
                out[i] = x
    return out


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
        slices = chunks(n)
        parts = pool.map(
            _polish_many, [fit.problem] * len(slices), [fit.theta] * len(slices), [weights[s] for s in slices]
        )
        thetas = np.concatenate(list(parts))
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
    ci95 = {c: [float(v.quantile(0.025)), float(v.quantile(0.975))] if len(v) > 1 else None for c, v in finite.items()}
    ci95_null = null_intervals(ci95, n_groups)
    return {
        "n": n,
        "n_failed": int((~ok).sum()),
        "n_nonfinite": {c: int(len(table) - len(v)) for c, v in finite.items() if len(v) < len(table)},
        "seed": seed,
        "n_groups": n_groups,
        "se": se,
        "ci95": ci95,
        "ci95_null": ci95_null,
        "health": bootstrap_health(fit, thetas[ok], n_groups, n),
        "samples": [{k: inf_if_nonfinite(float(v)) for k, v in s.items()} for s in samples],  # for prediction bands
        "method": "cluster bootstrap: groups drawn with replacement (numpy default_rng(seed)), each resample "
        "refit by BFGS warm-started from the full-data optimum; SD and 2.5/97.5 percentiles",
    }
