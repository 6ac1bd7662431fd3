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
* ``expand`` (with a fit of the upcycled D1 x D2 law on expanded runs, ``--expanded-fit``): an MoE of N_active
  active parameters trained from scratch on D1 tokens (sunk 6 N_active D1, in place of the dense model), expanded
  to more experts at the same top-k (``stages.expand``) and trained on the extra budget, read from that law at
  (D1, D2) (Dwivedi et al. 2026 expert upcycling);
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
the runner-up, or says "too close to call" (the margin, and what would decide it) when the margin is inside
their 95% bootstrap intervals (the intervals overlap) or, where the fits have no bootstrap resamples (e.g.
published point estimates: "no intervals"), when it is below ``min_margin`` of the runner-up's loss (default
MIN_MARGIN, 0.5%: about the scatter of measured losses around a fitted law, seed noise and fit residuals). When
the two are upcycling and scratch on the same tokens, the threshold D2* is what decides it: the verdict says
where it lies against the budget.

Extrapolation: every row carries ``extrapolation``, the largest factor max(value / hi, lo / value) over the
inputs of the laws behind its number against the fitted ranges (1 inside), and ``extrapolated`` (yes / no /
unknown when a fit records no ranges); the reasons are in ``note``, and in the warnings, each reason once with
the rows it concerns. Option predictions
beyond ``max_extrapolation`` are refused (a user error). Thresholds and the optimal split are flagged but never
refused: they are outputs of a root search or an optimisation, and a crossing far outside the data is itself an
answer ("not within anything measured"), though its value is then a guess. The factor is that of the point
estimate; the bootstrap intervals can reach further.

When the fits carry bootstrap resamples, every number gets a 95% interval (resample i of each law together).

The laws are read by stages.laws.fitted, the thresholds solved by stages.laws.crossing and each option predicted
by stages.laws.outcomes; this module builds the table and the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from stages.core.cli import UserError
from stages.laws.fitted import TOL, Laws
from stages.laws.outcomes import Budget, evaluate

# Without intervals, a margin below this fraction of the runner-up's loss is too close to call: about the scatter
# of measured losses around a fitted law (seed noise and fit residuals are a few tenths of a percent).
MIN_MARGIN = 0.005
OPTIONS = ("upcycle", "scratch_same_tokens", "scratch_same_compute", "dense_continued", "grow", "expand")
THRESHOLDS = ("threshold_same_tokens", "threshold_same_compute")
NEEDS = {
    "scratch_same_tokens": "scratch",
    "scratch_same_compute": "scratch",
    "threshold_same_tokens": "scratch",
    "threshold_same_compute": "scratch",
    "dense_continued": "dense",
    "grow": "grow",
    "expand": "expand",
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
    return "yes" if factor > 1 + TOL else "no"


def _loss_text(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e3 else f"{value:.4g}"  # a diverging resample can reach 1e13


def _with_interval(row: Mapping[str, Any]) -> str:
    text = _loss_text(row["predicted_loss"])
    if math.isfinite(row["loss_ci95_low"]) and math.isfinite(row["loss_ci95_high"]):
        text += f" [{_loss_text(row['loss_ci95_low'])}, {_loss_text(row['loss_ci95_high'])}]"
    return text


def verdict(
    rows: list[dict[str, Any]], budget: Budget, min_margin: float = MIN_MARGIN
) -> tuple[str, dict[str, Any] | None]:
    """The recommendation among the options within ``budget``, and the winning row (None if there is none).

    The winner is the lowest predicted loss. "Too close to call" (no winner) when the 95% intervals of the best two
    overlap, or when either lacks one and the margin is below ``min_margin`` of the runner-up's loss; the text
    gives the margin and what would decide it. Options outside the budget never win and are named as excluded.
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
    share = margin / abs(second["predicted_loss"])
    pair = f"{best['option']} {_with_interval(best)} vs {second['option']} {_with_interval(second)}"
    intervals = all(math.isfinite(r[k]) for r in (best, second) for k in ("loss_ci95_low", "loss_ci95_high"))
    if intervals and best["loss_ci95_high"] >= second["loss_ci95_low"]:
        why = "inside their 95% intervals"
        decide = "narrower intervals would decide it (more runs near this N1, D1 and D2, refitted)"
    elif not intervals and share < min_margin:
        why = f"under the {min_margin:.2%} of --min-margin, without intervals"
        decide = "intervals would decide it (fit your own runs with python -m stages.fit --bootstrap N)"
    else:
        how = "95% intervals disjoint" if intervals else "no intervals (the fits carry no bootstrap resamples)"
        text = (
            f"{best['option']}, lowest predicted loss within {budget}, by {margin:.4g} nats "
            f"({share:.2%}): {pair}; {how}"
        )
        return text + tail, best
    crossing = _deciding_threshold(rows, {best["option"], second["option"]})
    text = f"too close to call: {pair}, margin {margin:.4g} nats ({share:.2%}) {why}; {crossing}{decide}"
    return text + tail, None


def _deciding_threshold(rows: list[dict[str, Any]], pair: set[str]) -> str:
    """Where the same-token threshold D2* lies against the budget's D2, when upcycling and scratch on the same
    tokens are the two options too close to call ('' otherwise)."""
    by_option = {r["option"]: r for r in rows}
    threshold = by_option.get("threshold_same_tokens")
    if pair != {"upcycle", "scratch_same_tokens"} or threshold is None:
        return ""
    d2_star, d2 = threshold["tokens_this_phase"], by_option["upcycle"]["tokens_this_phase"]
    if not math.isfinite(d2_star) or not str(threshold["note"]).startswith("D2*: "):
        return ""
    sides = str(threshold["note"]).removeprefix("D2*: ").split(";")[0]
    where = f"{abs(d2_star / d2 - 1):.1%} {'above' if d2_star > d2 else 'below'}"
    return f"the laws cross at D2* = {d2_star:.4g}, {where} your D2 = {d2:.4g} ({sides}); "


def summarise(warnings: list[tuple[str, str]]) -> list[str]:
    """``(row, reason)`` pairs as one line per reason, in order of first appearance, naming the rows it concerns
    (a question outside the fitted ranges repeats each reason for every row built on the same law input)."""
    rows: dict[str, list[str]] = {}
    for row, reason in warnings:
        rows.setdefault(reason, [])
        if row and row not in rows[reason]:
            rows[reason].append(row)
    return [f"{reason} ({', '.join(where)})" if where else reason for reason, where in rows.items()]


def plan(
    laws: Laws,
    n1: float,
    n_active: float,
    d1: float,
    budget: Budget | float,
    total_flops: float | None,
    max_extrapolation: float,
    n_grown: float | None = None,
    min_margin: float = MIN_MARGIN,
) -> tuple[pd.DataFrame, list[str]]:
    """The decision table (one row per option and threshold, the verdict, warnings) and the warnings, each reason
    once with the rows it concerns (:func:`summarise`).

    ``budget`` is the extra budget (a plain number: extra tokens); ``min_margin`` is the verdict's (:func:`verdict`).
    Columns: see ``COLUMNS`` and the module docstring; the table is deterministic (same inputs, same rows in the
    same order).
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
    warnings: list[tuple[str, str]] = []  # (row, reason)
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
        warnings += [(option, r) for _, r in reasons]
        for root, uses in outcome.later:
            later_factor, _ = laws.extrapolation(uses)
            if later_factor > 1 + TOL:
                notes.append(f"the crossing at {root:.4g} is extrapolated x{later_factor:.3g}")
                warnings.append((option, f"the crossing at {root:.4g} is extrapolated x{later_factor:.3g}"))
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
            warnings.append((option, note))
    text, best = verdict(rows, budget, min_margin)
    keep = COLUMNS[2:-1]  # the winner's numbers, under the verdict's own option, kind and note
    rows.append({**_blank("verdict", "verdict"), **({k: best[k] for k in keep} if best else {}), "note": text})
    for caveat in laws.caveats:
        rows.append({**_blank("warning", "warning"), "note": caveat})
        warnings.append(("", caveat))
    return pd.DataFrame(rows, columns=list(COLUMNS)), summarise(warnings)


def _blank(option: str, kind: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
    row.update(option=option, kind=kind, within_budget="", extrapolated="", bootstrap_draws=0, note="")
    return row
