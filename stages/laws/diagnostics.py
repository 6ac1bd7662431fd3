"""The diagnostics that say when a fit has failed: parameters at a bound, parameters the data do not identify,
and an unhealthy bootstrap, as flags written into the fit JSON.

A fit can converge to a finite optimum and still say nothing: a floor that ran to 0, an exponent at 14, a
coefficient at 1e164, a ridge along which the data cannot choose, or a bootstrap whose intervals are set by
two clusters. :func:`fit_diagnostics` checks three things, each against a threshold defined (and justified)
below, and lists what it finds as short flags ("ok" when none):

- bounds: each parameter against the bounds of its role (``Law.roles``: floor, coefficient, exponent,
  interaction), see :func:`bound_codes`;
- identifiability: the spread of each parameter over the starts that ended as good as the best, and the
  Hessian at the optimum (flat directions, local standard errors), see :func:`identifiability`;
- bootstrap health: number of clusters, share of resamples at a bound, zero-width or withheld intervals,
  failed refits (computed by stages.laws.bootstrap with :func:`bootstrap_health` and :func:`null_intervals`).

How well a fit describes its data (errors, held-out predictions, statsmodels) is stages.laws.quality.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from stages.laws.fitter import FitResult
from stages.laws.forms import COEFFICIENT, EXPONENT, FLOOR, LOSS, Law, get_law

# Every threshold the flags use, with its reason. The flags are written into the fit JSON with these values.

FLOOR_MIN_SHARE = 1e-6
"""A floor below 1e-6 x the smallest loss, or a coefficient whose term is below 1e-6 of the predicted loss at
every row, has collapsed: it moves every log prediction by less than 1e-6, a thousandth of the Huber threshold
and far below the precision of a measured loss, so the data cannot tell it from 0 and its value is wherever
the optimiser stopped (log E = -1961 and log E = -27 fit equally). A real floor is a large share of the
smallest loss (Chinchilla: E = 1.82 against a smallest loss of 2.0)."""

COEFFICIENT_MAX = 1e12
"""A coefficient is the term's value at one token / one parameter: Chinchilla's A and B are ~500-2000 and
Kaplan-style fits ~10-1e4. Beyond 1e12 the term is a steep wall fitted to the smallest points (B = 4.7e164
comes with an exponent of 30), not a power law."""

EXPONENT_MAX = 3.0
"""Decay exponents must be positive (<= 0: the loss does not fall with the resource, another law) and are
0.05-0.7 in published LM fits; above 3 a term falls 1000x per decade: a step absorbing a few points."""

NEAR_BEST_RTOL = 1e-6
"""Starts whose final objective is within 1e-6 (relative) of the best count as reaching it. The fit counts a
start "at best" within 1e-9 (same point); 1e-6 also admits starts that stopped on the floor of a flat valley,
which is what shows the valley. It is still far below the objective's own sampling noise (relative
O(1/sqrt(n)), > 1e-2 here), so the data cannot prefer any of these points, and far tighter than the gaps
between distinct local minima, which are not an identifiability problem."""

SPREAD_MAX = 1e-2
"""A parameter whose near-best starts disagree by more than 1% is not identified: the disagreement shows in
the 2-3 digits the tables quote, 10x beyond the ~0.05% by which A and B of Chinchilla's flat-but-identified
valley move between optimisers. Floors and coefficients (fitted as logs) use the spread of their log, which is
the relative spread for small spreads and stays finite when a floor runs off to exp(-2000); exponents and
interactions use spread / max(|value|, SPREAD_SCALE)."""

SPREAD_SCALE = 1e-3
"""An exponent or interaction near 0 is judged on its absolute spread against 1e-3: below that it changes a
log prediction by < 0.1% per e-fold of its column (or per unit of ln x ln for an interaction ~ 1e-3)."""

REL_SE_MAX = 1.0
"""The Hessian test. The curvature of the objective at the optimum says how far each parameter can move before
the fit gets worse; scaled by the residual noise it is the parameter's local standard error,
SE_j = s sqrt((H^-1)_jj), with H = J^T J the Gauss-Newton Hessian of (1/2) sum r^2 over the log residuals r
(J: the exact derivatives of log L-hat, as in the objective's gradient) and s^2 = sum r^2 / dof: the classical
nonlinear least-squares SE. It is large exactly when H is near-singular, relative to the noise, in a direction
that moves parameter j: a ridge traded against the others, or a direction the data barely reach (alpha over a
1.5x range of N). Judged relative, like the spread (the SE of the log for floors and coefficients, SE /
max(|value|, SPREAD_SCALE) otherwise): beyond 1 the local 95% interval of an exponent holds 0 and 3x its value
and a coefficient's spans a factor 7 each way, so the data do not fix even its order of magnitude. On Epoch's
Chinchilla fit the largest is 0.21 (log B; SEs 1.3-2x below the 4000-resample bootstrap's, as local SEs on a
curved valley are); on the tiny demo's dense fit alpha's is 22, where its bootstrap interval is [-0.03, 27].

Why J^T J and not the fit objective's own Hessian: Huber's second derivative is 0 outside +-delta, so with
residuals above delta (Chinchilla's RMSE is 7x delta; l1 and mle always) it counts only the rows that happen
to sit within delta of the curve (a clean fit with 1% noise looked singular); and the full least-squares
Hessian adds sum r grad^2 r, which makes it indefinite at a Huber optimum with outliers (all 245 Chinchilla
points). J^T J counts every row and is positive semi-definite; it is the exact Hessian of the least-squares
objective at a zero-residual fit."""

FLAT_RTOL = 1e-12
"""A parameter whose Hessian diagonal is below 1e-12 x the largest is flat: the objective does not depend on it
(the diagonal is its derivative squared, so this is the FLOOR_MIN_SHARE collapse seen from the Hessian). Flat
parameters are not identified; the SEs, VIFs and scaled condition number are those of the others, with the
flat ones held fixed."""

# VIFs are reported, not flagged: (S^-1)_jj of the unit-diagonal centred Hessian S says how much the trade-off
# with the other parameters inflates j's squared SE (Epoch's Chinchilla fit: up to ~190; a clean 49-point
# synthetic fit ~60). A large VIF with a small SE is a collinear design that precise data still pin down, so
# the SE is the test.

MIN_CLUSTERS = 5
"""Fewer clusters than this and a percentile interval means nothing: k clusters give at most C(2k-1, k)
distinct resamples (k = 4: 35, k = 2: 3), so each 2.5% tail is one or two of them, and the resamples that
repeat a single cluster (probability k^(1-k): 1.6% at k = 4, 50% at k = 2) set the ends. From 5 on (126
distinct resamples, 0.16% single-cluster) the tails are sampling variation. Below it the resamples still run
and are written (samples, SDs) but every interval is withheld (null, with the reason) and the fit is flagged:
a warning rather than an error, so that a small study's DAG still draws its figures, which say so."""

BOUND_SHARE_MAX = 0.025
"""When more than 2.5% of resamples have a parameter at a bound (or collapsed), an end of its 95% percentile
interval lies in that region, so the interval describes where the optimiser gives up, not the data."""

ZERO_WIDTH_RTOL = 1e-6
"""An interval narrower than 1e-6 of its magnitude is zero-width: the parameter did not move in any resample,
which for a refit from the optimum means its gradient vanishes there (a collapsed floor), not that it is
known to 7 digits (that would take ~1e12 points). It is reported as null with the reason, never as an
interval."""


def log_space(law: Law, internal: np.ndarray, centres: Mapping[str, float]) -> np.ndarray:
    """Log-space parameters (log A, alpha, ...; law.params order) of internal points, shape (..., n_params)."""
    internal = np.asarray(internal, float)[..., : len(law.params)]
    return internal @ law.log_space_map(centres).T


def term_shares(law: Law, internal: np.ndarray, features: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Each term's largest share of the predicted loss over the rows, shape (n_points, n_terms)."""
    internal = np.atleast_2d(np.asarray(internal, float))[:, : len(law.params)]
    out = np.empty((len(internal), len(law.terms)))
    with np.errstate(all="ignore"):
        for lo in range(0, len(internal), chunk):
            part = internal[lo : lo + chunk]
            terms = np.add.reduceat(part[:, :, None] * features[None], law.term_starts, axis=1)
            out[lo : lo + chunk] = np.exp((terms - np.logaddexp.reduce(terms, axis=1)[:, None]).max(axis=2))
    return out


def bound_codes(law: Law, phi: np.ndarray, shares: np.ndarray, min_loss: float) -> dict[str, np.ndarray]:
    """Per reported parameter, a code per point: "" (inside its bounds) or the bound it breaks.

    ``phi``: log-space parameters (n_points, n_params); ``shares``: :func:`term_shares`; ``min_loss``: the
    smallest loss fitted. Floors: "collapsed" (< FLOOR_MIN_SHARE x min loss) or ">= min loss"; coefficients:
    "> 1e12" or "collapsed" (their term < FLOOR_MIN_SHARE of the prediction at every row); exponents: "<= 0"
    or "> 3"; interactions: none.
    """
    phi = np.atleast_2d(phi)
    log_min = math.log(min_loss)
    out = {}
    for j, (name, role) in enumerate(law.roles.items()):
        v, share = phi[:, j], shares[:, law.term_of[j]]
        if role == FLOOR:
            conditions = [v < log_min + math.log(FLOOR_MIN_SHARE), v >= log_min]
            labels = ["collapsed", ">= min loss"]
        elif role == COEFFICIENT:
            conditions = [v > math.log(COEFFICIENT_MAX), share < FLOOR_MIN_SHARE]
            labels = [f"> {COEFFICIENT_MAX:.0e}".replace("e+", "e"), "collapsed"]
        elif role == EXPONENT:
            conditions, labels = [v <= 0, v > EXPONENT_MAX], ["<= 0", f"> {EXPONENT_MAX:g}"]
        else:
            conditions, labels = [], []
        out[name] = np.select(conditions, labels, "") if conditions else np.full(len(phi), "")
    return out


def _sig(x: float, digits: int = 6) -> float | None:
    """``x`` to ``digits`` significant digits (diagnostic numbers should not carry last-bit noise); None if
    not finite."""
    x = float(x)
    return float(f"{x:.{digits - 1}e}") if math.isfinite(x) else None


def _jacobian(law: Law, theta: np.ndarray, features: np.ndarray) -> np.ndarray:
    """d log prediction / d parameter at each row, shape (n_rows, n_params): the features times the softmax
    weight of their term (exact, as in the objective's gradient)."""
    with np.errstate(all="ignore"):
        terms = law.terms_log(np.asarray(theta, float)[: len(law.params)], features)
        weights = np.exp(terms - np.logaddexp.reduce(terms, axis=0))
    return (features * weights[law.term_of]).T


def _condition(eigenvalues: np.ndarray) -> float:
    top = float(np.max(np.abs(eigenvalues)))
    low = float(np.min(np.abs(eigenvalues)))
    return top / low if low > 0 else math.inf


def _relative(width: float, role: str, value: float) -> float:
    """A spread or SE relative to the parameter: as is for logs (floors, coefficients), else over its size."""
    return width if role in (FLOOR, COEFFICIENT) else width / max(abs(value), SPREAD_SCALE)


def identifiability(fit: FitResult, frame: pd.DataFrame) -> dict[str, Any]:
    """Spread of each parameter over the near-best starts, and the Hessian at the optimum (see the thresholds).

    The Hessian is taken in the fitter's coordinates (``condition_number``: as the optimiser sees it) and
    analysed in centred log coordinates: for every law but chinchilla these are the fitter's; chinchilla is
    fitted uncentred (Hoffmann's grid), where log A and alpha are ~0.999 correlated through log N ~ 20 in any
    fit. Centring is an exact reparameterisation; standard errors are mapped back to the reported parameters.
    """
    law, problem = get_law(fit.law), fit.problem
    k = problem.n_params
    roles = list(law.roles.items())
    best_phi = log_space(law, fit.theta, fit.centres)
    out: dict[str, Any] = {"near_best_rtol": NEAR_BEST_RTOL, "spread_max": SPREAD_MAX, "rel_se_max": REL_SE_MAX}
    reasons: dict[str, list[str]] = {}

    if fit.start_values is not None and fit.start_points is not None:
        best = float(problem(fit.theta)[0])
        values = np.asarray(fit.start_values, float)
        near = np.isfinite(values) & (values <= best + NEAR_BEST_RTOL * abs(best))
        phi = log_space(law, np.vstack([np.asarray(fit.start_points)[near], fit.theta[None]]), fit.centres)
        spread = {name: _relative(float(np.ptp(phi[:, j])), role, best_phi[j]) for j, (name, role) in enumerate(roles)}
        for name, width in spread.items():
            if width > SPREAD_MAX:
                reasons.setdefault(name, []).append("spread")
        out["n_near_best"] = int(near.sum())
        out["relative_spread"] = {n: _sig(v) for n, v in spread.items()}
    else:
        out["n_near_best"] = None

    jac = _jacobian(law, fit.theta, problem.features)
    hess = jac.T @ jac
    centred = dataclasses.replace(law, centre=True)
    to_log = centred.log_space_map(centred.centres(frame))  # log-space = to_log @ centred
    to_centred = np.linalg.solve(law.log_space_map(fit.centres), to_log)  # internal = to_centred @ centred
    hess_c = to_centred.T @ hess @ to_centred
    finite = bool(np.all(np.isfinite(hess_c)))
    diag = np.diag(hess_c) if finite else np.zeros(k)
    flat = ~(diag > FLAT_RTOL * max(float(diag.max()), 0.0))
    keep = np.flatnonzero(~flat)
    vif, se = np.full(k, math.nan), np.full(k, math.nan)
    scaled_condition = math.inf
    resid = np.logaddexp.reduce(law.terms_log(fit.theta[:k], problem.features), axis=0) - problem.log_loss
    dof = len(resid) - len(keep)
    if len(keep):
        d = np.sqrt(diag[keep])
        lam, vec = np.linalg.eigh(hess_c[np.ix_(keep, keep)] / np.outer(d, d))
        scaled_condition = _condition(lam)
        inverse = (vec / np.maximum(lam, max(float(lam.max()), 0.0) * 1e-16 + 1e-300)) @ vec.T
        vif[keep] = np.diag(inverse)
        if dof > 0:
            cov = float(resid @ resid) / dof * (inverse / np.outer(d, d))
            se[keep] = np.sqrt(np.maximum(np.diag(to_log[:, keep] @ cov @ to_log[:, keep].T), 0.0))[keep]
    rel_se = {name: _relative(float(se[j]), role, best_phi[j]) for j, (name, role) in enumerate(roles)}
    for j, (name, _) in enumerate(roles):
        if flat[j]:
            reasons.setdefault(name, []).append("flat")
        elif rel_se[name] > REL_SE_MAX:
            reasons.setdefault(name, []).append("se")
    out["hessian"] = {
        "matrix": "Gauss-Newton J^T J of (1/2) sum of squared log residuals at the fit's optimum",
        "condition_number": _sig(_condition(np.linalg.eigvalsh(hess))) if finite else None,
        "condition_number_scaled": _sig(scaled_condition),
        "flat": [name for j, (name, _) in enumerate(roles) if flat[j]],
        "dof": dof,
        "relative_se": {n: _sig(v, 3) for n, v in rel_se.items()},
        "vif": {name: _sig(vif[j], 3) for j, (name, _) in enumerate(roles)},
        "method": "condition_number in the fitter's coordinates; SEs (s sqrt of the inverse's diagonal, s^2 = "
        "sum r^2 / dof) and VIFs in centred log coordinates, flat parameters held fixed; relative: SE of the "
        "log for floors and coefficients, SE / max(|value|, 1e-3) otherwise",
    }
    out["not_identified"] = {name: reasons[name] for name, _ in roles if name in reasons}
    return out


def bootstrap_health(fit: FitResult, thetas: np.ndarray, n_groups: int, n: int) -> dict[str, Any]:
    """Clusters, failed refits and the share of resamples with each parameter at a bound (``thetas``: the
    finite refits, internal coordinates)."""
    law = get_law(fit.law)
    min_loss = float(np.exp(fit.problem.log_loss.min()))
    shares: dict[str, float] = dict.fromkeys(law.roles, 0.0)
    if len(thetas):
        codes = bound_codes(
            law,
            log_space(law, thetas, fit.centres),
            term_shares(law, thetas, fit.problem.features),
            min_loss,
        )
        shares = {name: float(np.mean(c != "")) for name, c in codes.items()}
    return {
        "n_clusters": n_groups,
        "min_clusters": MIN_CLUSTERS,
        "failed_share": (n - len(thetas)) / n,
        "at_bound_share": shares,
        "at_bound_share_max": BOUND_SHARE_MAX,
    }


def null_intervals(ci95: dict[str, list[float] | None], n_groups: int) -> dict[str, str]:
    """Set to None the intervals that are no intervals, in place; returns why, per column."""
    reasons = {}
    for column, interval in ci95.items():
        if n_groups < MIN_CLUSTERS:
            reason = f"{n_groups} clusters < {MIN_CLUSTERS}: a percentile interval over so few means nothing"
        elif interval is None:
            reason = "fewer than 2 finite resamples"
        elif interval[1] - interval[0] <= ZERO_WIDTH_RTOL * max(abs(interval[0]), abs(interval[1])):
            reason = (
                f"zero width ({interval[0]:.6g} to {interval[1]:.6g}): the parameter did not move in any "
                "resample (its gradient vanishes at the optimum), which is not a measured uncertainty"
            )
        else:
            continue
        ci95[column] = None
        reasons[column] = reason
    return reasons


def fit_diagnostics(fit: FitResult, frame: pd.DataFrame, boot: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``diagnostics`` block of a fit JSON: bounds, identifiability, bootstrap health and the flags.

    ``frame``: the rows fitted; ``boot``: the fit's bootstrap block, if any. ``flags`` is a list of
    "what: parameters" strings and ``summary`` their "; " join, or "ok"; ``short`` names each parameter once
    and leaves out the details (for table cells and figure titles).
    """
    law = get_law(fit.law)
    min_loss = float(frame[LOSS].min())
    phi = log_space(law, fit.theta, fit.centres)
    codes = bound_codes(law, phi, term_shares(law, fit.theta, fit.problem.features), min_loss)
    bounds = {}
    for j, (name, role) in enumerate(law.roles.items()):
        code = str(codes[name][0])
        log_value = role in (FLOOR, COEFFICIENT) and name != law.params[j]  # reported as exp of a log
        bounds[name] = {
            "role": role,
            ("log_value" if log_value else "value"): _sig(phi[j], 10),
            "bound": code or None,
        }
    ident = identifiability(fit, frame)
    flags, short = [], []  # short: each parameter named once, for table cells and figure titles
    named: set[str] = set()

    def add(what: str, names: list[str], details: list[str] | None = None) -> None:
        if names:
            flags.append(f"{what}: " + ", ".join(details or names))
        new = [n for n in names if n not in named]
        if new:
            short.append(f"{what}: " + ", ".join(new))
            named.update(new)

    collapsed = [n for n, b in bounds.items() if b["bound"] == "collapsed"]
    at_bound = [n for n, b in bounds.items() if b["bound"] not in (None, "collapsed")]
    add("collapsed", collapsed)
    add("at bound", at_bound, [f"{n} {bounds[n]['bound']}" for n in at_bound])
    add("not identified", list(ident["not_identified"]))
    n_free = fit.problem.n_params + len(fit.problem.extra_params)
    if fit.n_points <= n_free:
        flags.append(f"no residual dof: {fit.n_points} points, {n_free} parameters")
        short.append("no residual dof")
    out: dict[str, Any] = {
        "bounds": bounds,
        "bound_thresholds": {
            "floor_min_share_of_min_loss": FLOOR_MIN_SHARE,
            "term_min_share_of_prediction": FLOOR_MIN_SHARE,
            "coefficient_max": COEFFICIENT_MAX,
            "exponent_range": [0.0, EXPONENT_MAX],
            "min_loss": min_loss,
        },
        "identifiability": ident,
    }
    if boot:
        health = dict(boot.get("health") or {})
        nulled = boot.get("ci95_null") or {}
        k = int(health.get("n_clusters", boot.get("n_groups", 0)))
        if k < MIN_CLUSTERS:
            flags.append(f"bootstrap: {k} clusters < {MIN_CLUSTERS}")
            short.append(f"bootstrap: {k} clusters")
        shares = health.get("at_bound_share") or {}
        over = [n for n, v in shares.items() if v > BOUND_SHARE_MAX]
        add("bootstrap at bound", over, [f"{n} {shares[n]:.0%}" for n in over])
        add("bootstrap zero-width", [c for c, r in nulled.items() if r.startswith("zero width")])
        if health.get("failed_share", 0.0) > BOUND_SHARE_MAX:
            flags.append(f"bootstrap failed: {health['failed_share']:.0%} of refits")
            short.append(f"bootstrap: {health['failed_share']:.0%} failed")
        out["bootstrap"] = {**health, "null_intervals": dict(nulled)}
    out["flags"] = flags
    out["summary"] = "; ".join(flags) if flags else "ok"
    out["short"] = "; ".join(short) if short else "ok"
    return out
