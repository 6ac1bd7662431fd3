"""Upcycle or train from scratch? Decisions from fitted laws, with bootstrap intervals.

Given a dense model of N1 (non-embedding) parameters already trained on D1 tokens (the sunk cost), an MoE of
N_active active parameters, and a budget of D2 extra tokens, :func:`plan` predicts the validation loss of

* ``upcycle``: the upcycled MoE after D2 more tokens, from the ``upcycled`` law (or ``joint_upcycled``,
  which also varies N1);
* ``scratch_same_tokens``: an MoE from scratch trained on D2 tokens (paper A1.5, first framing);
* ``scratch_same_compute``: an MoE from scratch given the same total compute, sunk dense cost included:
  D = D2 + (N1 / N_active) D1 (second framing);
* ``dense_continued``: the dense model after D1 + D2 tokens, read from the dense law as one run of that length
  (an optimistic bound: a re-warmed continuation of an annealed run does worse at small scale).

It also solves for the threshold D2* where upcycling and scratch reach the same loss under each framing (the
paper's Eq. 13 at this D1 and N1), and, for a total budget C, the compute-optimal split of
C = 6 N1 D1 + 6 N_active D2 between the dense and the upcycled phase. Scratch and dense predictions use the
``chinchilla`` laws fitted to MoE-from-scratch and dense runs with N = N1 (the paper fits the MoE law in N1).
When the fits carry bootstrap resamples, every number gets a 95% interval (resample i of each law together).
Predictions outside the fitted data ranges are flagged (a warning naming the range; beyond a given factor
times the range it is an error).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from stages.core.artifacts import read_json
from stages.core.cli import UserError
from stages.laws.forms import predict

SEARCH = (1e3, 1e16)  # token range searched for thresholds
UPCYCLED_LAWS = ("upcycled", "upcycled_no_interaction", "upcycled_additive", "joint_upcycled")
Array = np.ndarray


class Laws:
    """The fitted laws the planner needs (by role: upcycle, scratch, dense), with their data ranges."""

    def __init__(self, fits: dict[str, dict[str, Any]]) -> None:
        self.fits = fits

    @classmethod
    def read(cls, fits_dir: Path, names: dict[str, str]) -> Laws:
        fits: dict[str, dict[str, Any]] = {}
        for role, name in names.items():
            path = fits_dir / f"{name}.json"
            if path.exists():
                fit = read_json(path)
                if "law" not in fit or "params" not in fit or any(v is None for v in fit["params"].values()):
                    raise UserError(f"{path}: not a usable fit JSON (law and finite params needed)")
                fits[role] = fit
        if "upcycle" not in fits:
            raise UserError(
                f"{fits_dir}/{names['upcycle']}.json: no fit of the upcycled law (fit it first, or name "
                f"it with --upcycled-fit); the planner cannot predict upcycling without it"
            )
        if fits["upcycle"]["law"] not in UPCYCLED_LAWS:
            law = fits["upcycle"]["law"]
            raise UserError(f"{fits_dir}/{names['upcycle']}.json: law {law!r} is not an upcycled (D1, D2) law")
        return cls(fits)

    def has(self, role: str) -> bool:
        return role in self.fits

    def n_samples(self) -> int:
        """Bootstrap resamples available in every fit (0 if any fit has none)."""
        counts = [len((fit.get("bootstrap") or {}).get("samples") or []) for fit in self.fits.values()]
        return min(counts) if counts else 0

    def sample(self, i: int) -> Laws | None:
        """The same laws with every fit's parameters replaced by its i-th bootstrap resample."""
        fits = {}
        for role, fit in self.fits.items():
            params = fit["bootstrap"]["samples"][i]
            if any(v is None or not math.isfinite(v) for v in params.values()):
                return None
            fits[role] = {**fit, "params": params}
        return Laws(fits)

    def loss(self, role: str, **columns: float | Array) -> Array:
        """The law of ``role`` at the given columns (scalars and 1-D arrays broadcast together)."""
        fit = self.fits[role]
        arrays = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, float)) for v in columns.values()))
        return predict(fit["law"], fit["params"], pd.DataFrame(dict(zip(columns, arrays, strict=True))))

    def upcycled(self, n1: float, d1: float | Array, d2: float | Array) -> Array:
        extra = {"N1": n1} if self.fits["upcycle"]["law"] == "joint_upcycled" else {}
        return self.loss("upcycle", D1=d1, D2=d2, **extra)

    def extrapolation(self, role: str, max_factor: float, **columns: float) -> list[str]:
        """Warnings for columns outside the fitted range; an error beyond ``max_factor`` times the range."""
        ranges = self.fits[role].get("ranges")
        if not ranges:
            return [f"{role}: the fit records no data ranges (fitted by an older stages.fit): extrapolation unchecked"]
        out = []
        for col, value in columns.items():
            if col not in ranges:
                continue
            lo, hi = ranges[col]
            if not lo <= value <= hi:
                factor = lo / value if value < lo else value / hi
                message = (
                    f"{role}: {col} = {value:.4g} is outside the fitted range [{lo:.4g}, {hi:.4g}] (x{factor:.3g})"
                )
                if factor > max_factor:
                    raise UserError(message + f"; more than --max-extrapolation {max_factor:g}: refusing to predict")
                out.append(message)
        return out


def crossings(gap: Callable[[Array], Array]) -> tuple[list[float], bool]:
    """Every D2 where ``gap(log D2)`` = log L_upcycle - log L_scratch changes sign, and whether upcycling wins below
    the first one.

    Fitted laws can cross more than once (e.g. a weakly identified floor E): all crossings are returned in
    increasing order, so a caller never mistakes the first one for the whole story. Empty when the sign never
    changes over the searched range.
    """
    grid = np.linspace(math.log(SEARCH[0]), math.log(SEARCH[1]), 241)
    values = gap(grid)
    upcycle_wins_first = bool(values[0] < 0)
    roots = []
    for i in np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0):
        root = optimize.brentq(lambda x: float(gap(np.array([x]))[0]), grid[i], grid[i + 1], xtol=1e-10)
        roots.append(float(math.exp(root)))
    return roots, upcycle_wins_first


def log_gap(laws: Laws, n1: float, d1: float | Array, d2: float | Array, scratch_extra_tokens: float | Array) -> Array:
    """log L_upcycle - log L_scratch, the scratch MoE trained on D2 + ``scratch_extra_tokens``: < 0 where upcycling
    wins (arrays broadcast together)."""
    d2 = np.asarray(d2, float)
    return np.log(laws.upcycled(n1, d1, d2)) - np.log(laws.loss("scratch", N=n1, D=d2 + scratch_extra_tokens))


def d2_crossings(laws: Laws, n1: float, d1: float, scratch_extra_tokens: float) -> tuple[list[float], bool]:
    """The D2 values where the upcycled MoE and an MoE from scratch trained on D2 + ``scratch_extra_tokens`` tie."""
    return crossings(lambda x: log_gap(laws, n1, d1, np.exp(x), scratch_extra_tokens))


def _threshold_note(roots: list[float], upcycle_first: bool) -> str:
    if not roots:
        who = "upcycling" if upcycle_first else "scratch"
        return f"no crossing for D2 in {SEARCH[0]:.0e}..{SEARCH[1]:.0e}: {who} wins throughout"
    first, then = ("upcycling", "scratch") if upcycle_first else ("scratch", "upcycling")
    note = f"D2*: {first} wins below, {then} above"
    if len(roots) > 1:
        note += "; the laws cross again at " + ", ".join(f"{r:.4g}" for r in roots[1:])
    return note


def optimal_split(laws: Laws, n1: float, n_active: float, total_flops: float) -> tuple[float, float, float]:
    """Minimise L_upcycle(D1, D2) subject to 6 N1 D1 + 6 N_active D2 = C: returns (loss, D1*, D2*)."""

    def tokens(share: Array) -> tuple[Array, Array]:
        return share * total_flops / (6 * n1), (1 - share) * total_flops / (6 * n_active)

    shares = np.linspace(0.01, 0.99, 99)
    best = float(shares[int(np.argmin(laws.upcycled(n1, *tokens(shares))))])
    res = optimize.minimize_scalar(
        lambda s: float(laws.upcycled(n1, *tokens(np.array([s])))[0]),
        bounds=(max(0.001, best - 0.01), min(0.999, best + 0.01)),
        method="bounded",
        options={"xatol": 1e-8},
    )
    d1, d2 = tokens(np.array([float(res.x)]))
    return float(res.fun), float(d1[0]), float(d2[0])


@dataclass(frozen=True)
class Outcome:
    """One option of the decision: its predicted loss, the tokens of the phase it is about, and a note."""

    loss: float
    tokens: float
    note: str
    flops_extra: float = math.nan
    dense_tokens: float = math.nan  # D1* of the optimal split


def evaluate(
    laws: Laws, n1: float, n_active: float, d1: float, d2: float, total_flops: float | None
) -> dict[str, Outcome]:
    """Every option for one set of law parameters."""
    out = {
        "upcycle": Outcome(float(laws.upcycled(n1, d1, d2)[0]), d2, f"D1={d1:.4g} sunk, D2={d2:.4g}", 6 * n_active * d2)
    }
    if laws.has("scratch"):
        same_compute = d2 + (n1 / n_active) * d1
        out["scratch_same_tokens"] = Outcome(
            float(laws.loss("scratch", N=n1, D=d2)[0]), d2, "MoE from scratch on D2 tokens", 6 * n_active * d2
        )
        out["scratch_same_compute"] = Outcome(
            float(laws.loss("scratch", N=n1, D=same_compute)[0]),
            same_compute,
            "MoE from scratch, sunk compute too",
            6 * n_active * same_compute,
        )
        for option, extra in (("threshold_same_tokens", 0.0), ("threshold_same_compute", (n1 / n_active) * d1)):
            roots, upcycle_first = d2_crossings(laws, n1, d1, extra)
            out[option] = Outcome(math.nan, roots[0] if roots else math.nan, _threshold_note(roots, upcycle_first))
    if laws.has("dense"):
        out["dense_continued"] = Outcome(
            float(laws.loss("dense", N=n1, D=d1 + d2)[0]),
            d2,
            "dense law at D1 + D2 (optimistic for a re-warmed continuation)",
            6 * n1 * d2,
        )
    if total_flops is not None:
        loss, best_d1, best_d2 = optimal_split(laws, n1, n_active, total_flops)
        note = f"D1*={best_d1:.4g} ({6 * n1 * best_d1 / total_flops:.1%} of C on the dense phase), D2*={best_d2:.4g}"
        out["optimal_split"] = Outcome(loss, best_d2, note, 6 * n_active * best_d2, best_d1)
    return out


def plan(
    laws: Laws,
    n1: float,
    n_active: float,
    d1: float,
    extra_tokens: float,
    total_flops: float | None,
    max_extrapolation: float,
) -> tuple[pd.DataFrame, list[str]]:
    """The decision table (with bootstrap intervals when the fits have resamples) and the warnings."""
    warnings = laws.extrapolation("upcycle", max_extrapolation, D1=d1, D2=extra_tokens, N1=n1)
    if laws.has("scratch"):
        for tokens in (extra_tokens, extra_tokens + (n1 / n_active) * d1):
            warnings += laws.extrapolation("scratch", max_extrapolation, N=n1, D=tokens)
    if laws.has("dense"):
        warnings += laws.extrapolation("dense", max_extrapolation, N=n1, D=d1 + extra_tokens)
    point = evaluate(laws, n1, n_active, d1, extra_tokens, total_flops)
    if "optimal_split" in point:
        split = point["optimal_split"]
        warnings += laws.extrapolation("upcycle", math.inf, D1=split.dense_tokens, D2=split.tokens)
    draws: dict[str, list[tuple[float, float]]] = {option: [] for option in point}
    for i in range(laws.n_samples()):
        sampled = laws.sample(i)
        if sampled is None:
            continue
        with np.errstate(all="ignore"):
            for option, outcome in evaluate(sampled, n1, n_active, d1, extra_tokens, total_flops).items():
                draws[option].append((outcome.loss, outcome.tokens))
    rows = []
    for option, outcome in point.items():
        row: dict[str, Any] = {
            "option": option,
            "predicted_loss": outcome.loss,
            "tokens_this_phase": outcome.tokens,
            "flops_extra": outcome.flops_extra,
            "flops_total": outcome.flops_extra + 6 * n1 * (outcome.dense_tokens if option == "optimal_split" else d1),
            "note": outcome.note,
        }
        values = np.array(draws[option]).reshape(-1, 2)
        for j, col in enumerate(("loss", "tokens")):
            finite = values[:, j][np.isfinite(values[:, j])]
            enough = len(finite) >= 10
            row[f"{col}_ci95_low"] = float(np.percentile(finite, 2.5)) if enough else math.nan
            row[f"{col}_ci95_high"] = float(np.percentile(finite, 97.5)) if enough else math.nan
        row["bootstrap_draws"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows), warnings
