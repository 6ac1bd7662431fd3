"""Upcycle, train an MoE from scratch, or keep training the dense model? Decisions from fitted laws.

The question answered: *I own a dense checkpoint of N1 (non-embedding) parameters trained on D1 tokens (sunk
cost). How should I spend my extra budget (tokens, or FLOPs)?* :func:`plan` predicts the validation loss of

* ``upcycle``: the upcycled MoE (N_active active parameters) after D2 more tokens, from the ``upcycled`` law (or
  ``joint_upcycled``, which also varies N1);
* ``scratch_same_tokens``: an MoE from scratch trained on the same D2 tokens, i.e. within the same extra budget
  (paper A1.5, first framing; the dense checkpoint goes unused);
* ``scratch_same_compute``: an MoE from scratch given the upcycled model's whole compute, sunk dense cost
  included: D = D2 + (N1 / N_active) D1 (second framing). It spends more than the extra budget by construction,
  so it is shown for context and never recommended;
* ``dense_continued``: the dense model after D1 + D2' tokens, where D2' spends the same extra budget (D2' = D2 for
  a token budget, C / (6 N1) for a FLOP budget), read from the dense law as one run of that length (an
  optimistic bound: a re-warmed continuation of an annealed run does worse at small scale);
* ``grow`` (with a fit of the upcycled D1 x D2 law on grown runs, ``--grown-fit``): the dense model grown into a
  larger dense model of N_grown parameters (``stages.grow``) and trained on the extra budget (D2 = the extra
  tokens, or C / (6 N_grown)), read from that law at (D1, D2) (with N1 for ``joint_upcycled``); its baseline,
  the larger model from scratch, is a dense-law question (Mallik et al. 2024 warm-starting);
* ``optimal_split`` (with a total budget C): the compute-optimal split C = 6 N1 D1* + 6 N_active D2* of a fresh
  run (dense phase, then upcycling); nothing of it is sunk, so its extra cost is all of C.

It also solves for the thresholds D2* where upcycling and scratch reach the same loss under each framing (the
paper's Eq. 13 at this D1 and N1). Scratch and dense predictions use the ``chinchilla`` laws fitted to
MoE-from-scratch and dense runs with N = N1 (the paper fits the MoE law in N1).

Compute ledger (``flops_extra``, ``flops_total``): with 6 N D FLOPs per run, the sunk dense cost 6 N1 D1 is
counted once. ``flops_extra`` is what the user still has to spend; ``flops_total`` is the training compute of the
resulting model's whole lineage (upcycle and dense_continued: 6 N1 D1 + extra; an MoE from scratch: its own
training only). So the "same total compute" framing means equal ``flops_total`` for upcycle and
scratch_same_compute.

Budget rule: an option competes only if it fits the extra budget (its extra tokens, or its ``flops_extra``, at
most the budget). The verdict names the option with the lowest predicted loss among those and its margin over
the runner-up; "indistinguishable" when their 95% bootstrap intervals overlap; "no intervals" when the fits have
no bootstrap resamples (e.g. published point estimates).

Extrapolation: every row carries ``extrapolation``, the largest factor max(value / hi, lo / value) over the
inputs of the laws behind its number against the fitted ranges (1 inside), and ``extrapolated`` (yes / no /
unknown when a fit records no ranges); the reasons are in ``note`` as well as on stderr. Option predictions
beyond ``max_extrapolation`` are refused (a user error). Thresholds and the optimal split are flagged but never
refused: they are outputs of a root search or an optimisation, and a crossing far outside the data is itself an
answer ("not within anything measured"), though its value is then a guess. The factor is that of the point
estimate; the bootstrap intervals can reach further.

When the fits carry bootstrap resamples, every number gets a 95% interval (resample i of each law together).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from stages.core.artifacts import read_json
from stages.core.cli import UserError
from stages.laws.forms import predict
from stages.laws.published import CAVEATS, FIT_SETS, fit_set

SEARCH = (1e3, 1e16)  # token range searched for thresholds
UPCYCLED_LAWS = ("upcycled", "upcycled_no_interaction", "upcycled_additive", "joint_upcycled")
OPTIONS = ("upcycle", "scratch_same_tokens", "scratch_same_compute", "dense_continued", "grow")
THRESHOLDS = ("threshold_same_tokens", "threshold_same_compute")
NEEDS = {
    "scratch_same_tokens": "scratch",
    "scratch_same_compute": "scratch",
    "threshold_same_tokens": "scratch",
    "threshold_same_compute": "scratch",
    "dense_continued": "dense",
    "grow": "grow",
}
COLUMNS = (
    "option",
    "kind",
    "within_budget",
    "predicted_loss",
    "loss_ci95_low",
    "loss_ci95_high",
    "tokens_this_phase",
    "tokens_ci95_low",
    "tokens_ci95_high",
    "flops_extra",
    "flops_total",
    "extrapolation",
    "extrapolated",
    "bootstrap_draws",
    "note",
)
_TOL = 1e-9  # relative slack of the budget check and of "inside the range"
Array = np.ndarray
Uses = tuple[tuple[str, dict[str, float]], ...]


@dataclass(frozen=True)
class Budget:
    """The user's extra budget: at most ``amount`` more training tokens, or ``amount`` more FLOPs (6 N D)."""

    amount: float
    unit: str = "tokens"  # "tokens" or "flops"

    def tokens(self, n_params: float) -> float:
        """Tokens a model of ``n_params`` (active) parameters trains on when it spends the whole budget."""
        return self.amount if self.unit == "tokens" else self.amount / (6 * n_params)

    def allows(self, tokens: float, flops: float) -> bool:
        spent = tokens if self.unit == "tokens" else flops
        return bool(spent <= self.amount * (1 + _TOL))

    def __str__(self) -> str:
        return f"{self.amount:.4g} extra {'tokens' if self.unit == 'tokens' else 'FLOPs'}"


class Laws:
    """The fitted laws the planner needs (by role: upcycle, scratch, dense, grow), with their data ranges."""

    def __init__(
        self,
        fits: dict[str, dict[str, Any]],
        missing: Mapping[str, str] | None = None,
        caveats: tuple[str, ...] = (),
    ) -> None:
        self.fits = fits
        self.missing = dict(missing or {})  # role -> why it has no fit
        self.caveats = caveats

    @classmethod
    def read(cls, fits_dir: Path, names: dict[str, str]) -> Laws:
        """Fit JSON files ``fits_dir/<name>.json`` by role."""
        fits = {
            role: read_json(fits_dir / f"{name}.json")
            for role, name in names.items()
            if (fits_dir / f"{name}.json").exists()
        }
        return cls._checked(
            fits,
            names,
            lambda name: f"{fits_dir}/{name}.json",
            lambda role, name: f"no {role} fit in {fits_dir} ({name}.json)",
            (),
        )

    @classmethod
    def published(cls, set_name: str, names: dict[str, str]) -> Laws:
        """A published fit set of stages.laws.published (e.g. ``liew2025``) by role."""
        fits = fit_set(set_name)
        return cls._checked(
            {role: fits[name] for role, name in names.items() if name in fits},
            names,
            lambda name: f"fit set {set_name}: {name}",
            lambda role, name: f"fit set {set_name} has no {name!r} law (the source publishes none)",
            (CAVEATS[set_name],) if set_name in CAVEATS else (),
        )

    @classmethod
    def load(cls, source: str, names: dict[str, str]) -> Laws:
        """A directory of fit JSON files, or else the name of a published fit set."""
        if Path(source).is_dir():
            return cls.read(Path(source), names)
        if source in FIT_SETS:
            return cls.published(source, names)
        raise UserError(
            f"--fits {source}: neither a directory of fit JSON files nor a published fit set "
            f"({', '.join(sorted(FIT_SETS))})"
        )

    @classmethod
    def _checked(
        cls,
        fits: dict[str, dict[str, Any]],
        names: dict[str, str],
        where: Callable[[str], str],
        why_missing: Callable[[str, str], str],
        caveats: tuple[str, ...],
    ) -> Laws:
        for role, fit in fits.items():
            if "law" not in fit or "params" not in fit or any(v is None for v in fit["params"].values()):
                raise UserError(f"{where(names[role])}: not a usable fit JSON (law and finite params needed)")
        if "upcycle" not in fits:
            raise UserError(
                f"{where(names['upcycle'])}: no fit of the upcycled law (fit it first, or name it with "
                f"--upcycled-fit); the planner cannot predict upcycling without it"
            )
        for role in ("upcycle", "grow"):
            if role in fits and fits[role]["law"] not in UPCYCLED_LAWS:
                law = fits[role]["law"]
                raise UserError(f"{where(names[role])}: law {law!r} is not an upcycled (D1, D2) law")
        missing = {role: why_missing(role, name) for role, name in names.items() if role not in fits}
        return cls(fits, missing, caveats)

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

    def upcycle_columns(self, n1: float, d1: Any, d2: Any, role: str = "upcycle") -> dict[str, Any]:
        """The inputs of the upcycled law of ``role`` (upcycle, or grow: the same law fitted on grown runs); N1 only
        for ``joint_upcycled``."""
        return {"N1": n1, "D1": d1, "D2": d2} if self.fits[role]["law"] == "joint_upcycled" else {"D1": d1, "D2": d2}

    def upcycled(self, n1: float, d1: float | Array, d2: float | Array) -> Array:
        return self.loss("upcycle", **self.upcycle_columns(n1, d1, d2))

    def range_check(self, role: str, columns: Mapping[str, float]) -> list[tuple[float, str]]:
        """(factor, reason) per column of ``role``'s law outside its fitted range; factor = max(value/hi, lo/value).

        A NaN factor means the fit records no ranges (nothing can be checked).
        """
        ranges = self.fits[role].get("ranges")
        if not ranges:
            return [(math.nan, f"{role}: the fit records no data ranges (fitted by an older stages.fit): unchecked")]
        out = []
        for col, value in columns.items():
            if col not in ranges:
                continue
            lo, hi = ranges[col]
            factor = max(value / hi, lo / value)
            if factor > 1 + _TOL:
                out.append(
                    (
                        factor,
                        f"{role}: {col} = {value:.4g} is outside the fitted range [{lo:.4g}, {hi:.4g}] (x{factor:.3g})",
                    )
                )
        return out

    def extrapolation(self, uses: Uses) -> tuple[float, list[tuple[float, str]]]:
        """The largest extrapolation factor of the laws ``uses`` (1 inside every range, NaN if unknown) and why."""
        reasons = [r for role, columns in uses for r in self.range_check(role, columns)]
        if any(math.isnan(f) for f, _ in reasons):
            return math.nan, reasons
        return max([1.0, *(f for f, _ in reasons)]), reasons


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
    """One row of the decision: its predicted loss, the tokens of the phase it is about, its compute and a note."""

    loss: float
    tokens: float  # tokens of the phase the row is about (D2, D, D2*)
    spent_tokens: float  # extra tokens the user trains on (NaN: not an option)
    flops_extra: float  # FLOPs still to spend
    flops_total: float  # training FLOPs of the resulting model's lineage, sunk dense cost once
    note: str
    uses: Uses = ()  # the laws behind the number and their inputs, for the extrapolation check
    later: tuple[tuple[float, Uses], ...] = ()  # a threshold's further crossings and the laws behind each

    @property
    def is_option(self) -> bool:
        return not math.isnan(self.spent_tokens)


def evaluate(
    laws: Laws,
    n1: float,
    n_active: float,
    d1: float,
    budget: Budget | float,
    total_flops: float | None,
    n_grown: float | None = None,
) -> dict[str, Outcome]:
    """Every option and threshold for one set of law parameters (``grow`` with a grow fit and ``n_grown``)."""
    budget = budget if isinstance(budget, Budget) else Budget(float(budget))
    sunk = 6 * n1 * d1
    d2 = budget.tokens(n_active)
    extra = 6 * n_active * d2
    out = {
        "upcycle": Outcome(
            float(laws.upcycled(n1, d1, d2)[0]),
            d2,
            d2,
            extra,
            sunk + extra,
            f"upcycled MoE: D1={d1:.4g} sunk, D2={d2:.4g} more tokens",
            (("upcycle", laws.upcycle_columns(n1, d1, d2)),),
        )
    }
    if laws.has("scratch"):
        sunk_as_moe_tokens = sunk / (6 * n_active)  # (N1 / N_active) D1
        same = d2 + sunk_as_moe_tokens
        out["scratch_same_tokens"] = Outcome(
            float(laws.loss("scratch", N=n1, D=d2)[0]),
            d2,
            d2,
            extra,
            extra,
            "MoE from scratch on the same D2 tokens (same extra budget; the dense checkpoint unused)",
            (("scratch", {"N": n1, "D": d2}),),
        )
        out["scratch_same_compute"] = Outcome(
            float(laws.loss("scratch", N=n1, D=same)[0]),
            same,
            same,
            6 * n_active * same,
            6 * n_active * same,
            "MoE from scratch on D2 + (N1/N_active) D1 tokens: the upcycled model's total compute",
            (("scratch", {"N": n1, "D": same}),),
        )
        for option, shift in (("threshold_same_tokens", 0.0), ("threshold_same_compute", sunk_as_moe_tokens)):
            roots, upcycle_first = d2_crossings(laws, n1, d1, shift)
            root = roots[0] if roots else math.nan
            uses: Uses = (
                (("upcycle", laws.upcycle_columns(n1, d1, root)), ("scratch", {"N": n1, "D": root + shift}))
                if roots
                else ()
            )
            later = tuple(
                (r, (("upcycle", laws.upcycle_columns(n1, d1, r)), ("scratch", {"N": n1, "D": r + shift})))
                for r in roots[1:]
            )
            out[option] = Outcome(
                math.nan,
                root,
                math.nan,
                6 * n_active * root,
                sunk + 6 * n_active * root,
                _threshold_note(roots, upcycle_first),
                uses,
                later,
            )
    if laws.has("dense"):
        dd = budget.tokens(n1)
        out["dense_continued"] = Outcome(
            float(laws.loss("dense", N=n1, D=d1 + dd)[0]),
            dd,
            dd,
            6 * n1 * dd,
            sunk + 6 * n1 * dd,
            f"dense law at D1 + {dd:.4g} tokens as one run (optimistic for a re-warmed continuation)",
            (("dense", {"N": n1, "D": d1 + dd}),),
        )
    if laws.has("grow") and n_grown:
        dg = budget.tokens(n_grown)
        columns = laws.upcycle_columns(n1, d1, dg, "grow")
        out["grow"] = Outcome(
            float(laws.loss("grow", **columns)[0]),
            dg,
            dg,
            6 * n_grown * dg,
            sunk + 6 * n_grown * dg,
            f"dense model grown to N={n_grown:.4g} (D1={d1:.4g} sunk), then D2={dg:.4g} more tokens (grown-run law)",
            (("grow", columns),),
        )
    if total_flops is not None:
        loss, best_d1, best_d2 = optimal_split(laws, n1, n_active, total_flops)
        note = (
            f"fresh run: D1*={best_d1:.4g} ({6 * n1 * best_d1 / total_flops:.1%} of C on the dense phase), "
            f"D2*={best_d2:.4g}"
        )
        out["optimal_split"] = Outcome(
            loss,
            best_d2,
            best_d1 + best_d2,
            total_flops,
            total_flops,
            note,
            (("upcycle", laws.upcycle_columns(n1, best_d1, best_d2)),),
        )
    return out


def _interval(values: list[float]) -> tuple[float, float]:
    finite = np.array([v for v in values if math.isfinite(v)])
    if len(finite) < 10:
        return math.nan, math.nan
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))


def _flag(factor: float, checked: bool) -> str:
    if not checked:
        return ""
    if math.isnan(factor):
        return "unknown"
    return "yes" if factor > 1 + _TOL else "no"


def _loss_text(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e3 else f"{value:.4g}"  # a diverging resample can reach 1e13


def _with_interval(row: Mapping[str, Any]) -> str:
    text = _loss_text(row["predicted_loss"])
    if math.isfinite(row["loss_ci95_low"]) and math.isfinite(row["loss_ci95_high"]):
        text += f" [{_loss_text(row['loss_ci95_low'])}, {_loss_text(row['loss_ci95_high'])}]"
    return text


def verdict(rows: list[dict[str, Any]], budget: Budget) -> tuple[str, dict[str, Any] | None]:
    """The recommendation among the options within ``budget``, and the winning row (None if there is none).

    The winner is the lowest predicted loss; "indistinguishable" when the 95% intervals of the best two overlap;
    "no intervals" when either lacks one. Options outside the budget never win and are named as excluded.
    """
    options = [r for r in rows if r["kind"] == "option"]
    ranked = sorted(
        (r for r in options if r["within_budget"] == "yes" and math.isfinite(r["predicted_loss"])),
        key=lambda r: (r["predicted_loss"], r["option"]),
    )
    excluded = [r["option"] for r in options if r["within_budget"] == "no"]
    tail = f"; outside the budget, not considered: {', '.join(excluded)}" if excluded else ""
    flagged = [f"{r['option']} x{r['extrapolation']:.3g}" for r in ranked[:2] if r["extrapolated"] == "yes"]
    if flagged:
        tail = f"; extrapolated: {', '.join(flagged)}" + tail
    if not ranked:
        return f"no option predicted within {budget}" + tail, None
    best = ranked[0]
    if len(ranked) == 1:
        return f"{best['option']}: the only option predicted within {budget} ({_with_interval(best)})" + tail, best
    second = ranked[1]
    margin = second["predicted_loss"] - best["predicted_loss"]
    pair = f"{best['option']} {_with_interval(best)} vs {second['option']} {_with_interval(second)}"
    intervals = all(math.isfinite(r[k]) for r in (best, second) for k in ("loss_ci95_low", "loss_ci95_high"))
    if intervals and best["loss_ci95_high"] >= second["loss_ci95_low"]:
        return f"indistinguishable: {pair}, overlapping 95% intervals (point margin {margin:.4g} nats)" + tail, None
    how = "95% intervals disjoint" if intervals else "no intervals (the fits carry no bootstrap resamples)"
    text = (
        f"{best['option']}, lowest predicted loss within {budget}, by {margin:.4g} nats "
        f"({margin / second['predicted_loss']:.2%}): {pair}; {how}"
    )
    return text + tail, best


def plan(
    laws: Laws,
    n1: float,
    n_active: float,
    d1: float,
    budget: Budget | float,
    total_flops: float | None,
    max_extrapolation: float,
    n_grown: float | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The decision table (one row per option and threshold, the verdict, warnings) and the warnings.

    ``budget`` is the extra budget (a plain number: extra tokens). Columns: see ``COLUMNS`` and the module
    docstring; the table is deterministic (same inputs, same rows in the same order).
    """
    budget = budget if isinstance(budget, Budget) else Budget(float(budget))
    point = evaluate(laws, n1, n_active, d1, budget, total_flops, n_grown)
    checks = {option: laws.extrapolation(outcome.uses) for option, outcome in point.items()}
    for option in OPTIONS:
        reasons = [r for r in checks.get(option, (1.0, []))[1] if r[0] > max_extrapolation]
        if reasons:
            raise UserError(
                max(reasons)[1] + f"; more than --max-extrapolation {max_extrapolation:g}: refusing to predict"
            )
    draws: dict[str, list[tuple[float, float]]] = {option: [] for option in point}
    for i in range(laws.n_samples()):
        sampled = laws.sample(i)
        if sampled is None:
            continue
        with np.errstate(all="ignore"):
            for option, outcome in evaluate(sampled, n1, n_active, d1, budget, total_flops, n_grown).items():
                draws[option].append((outcome.loss, outcome.tokens))
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for option, outcome in point.items():
        factor, reasons = checks[option]
        notes = [outcome.note]
        within = ""
        if outcome.is_option:
            within = "yes" if budget.allows(outcome.spent_tokens, outcome.flops_extra) else "no"
            if within == "no":
                spent = outcome.spent_tokens if budget.unit == "tokens" else outcome.flops_extra
                notes.insert(0, f"outside the budget ({spent:.4g} > {budget}): context only, never recommended")
        outside = [r for f, r in reasons if not math.isnan(f)]
        if outside:
            kind = "within --max-extrapolation" if option in OPTIONS else "flagged, not refused"
            notes.append(f"extrapolated ({kind}): " + "; ".join(outside))
        unchecked = [r for f, r in reasons if math.isnan(f)]
        if unchecked:
            notes.append("extrapolation unknown: " + "; ".join(unchecked))
        warnings += [f"{option}: {r}" for _, r in reasons]
        for root, uses in outcome.later:
            later_factor, _ = laws.extrapolation(uses)
            if later_factor > 1 + _TOL:
                notes.append(f"the crossing at {root:.4g} is extrapolated x{later_factor:.3g}")
                warnings.append(f"{option}: the crossing at {root:.4g} is extrapolated x{later_factor:.3g}")
        loss_ci = _interval([d[0] for d in draws[option]])
        tokens_ci = _interval([d[1] for d in draws[option]])
        rows.append(
            {
                "option": option,
                "kind": "option" if outcome.is_option else "threshold",
                "within_budget": within,
                "predicted_loss": outcome.loss,
                "loss_ci95_low": loss_ci[0],
                "loss_ci95_high": loss_ci[1],
                "tokens_this_phase": outcome.tokens,
                "tokens_ci95_low": tokens_ci[0],
                "tokens_ci95_high": tokens_ci[1],
                "flops_extra": outcome.flops_extra,
                "flops_total": outcome.flops_total,
                "extrapolation": factor if outcome.uses else math.nan,
                "extrapolated": _flag(factor, bool(outcome.uses)),
                "bootstrap_draws": len(draws[option]),
                "note": "; ".join(notes),
            }
        )
    for option in (*OPTIONS, *THRESHOLDS):
        role = NEEDS.get(option)
        if role and role in laws.missing and option not in point:
            note = f"unavailable: {laws.missing[role]}"
            rows.append({**_blank(option, "unavailable"), "note": note})
            warnings.append(f"{option}: {note}")
    text, best = verdict(rows, budget)
    keep = COLUMNS[2:-1]  # the winner's numbers, under the verdict's own option, kind and note
    rows.append({**_blank("verdict", "verdict"), **({k: best[k] for k in keep} if best else {}), "note": text})
    for caveat in laws.caveats:
        rows.append({**_blank("warning", "warning"), "note": caveat})
        warnings.append(caveat)
    return pd.DataFrame(rows, columns=list(COLUMNS)), warnings


def _blank(option: str, kind: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
    row.update(option=option, kind=kind, within_budget="", extrapolated="", bootstrap_draws=0, note="")
    return row
