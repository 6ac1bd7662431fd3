"""Upcycle or train from scratch? Decisions from fitted laws.

``python -m stages.planner --fits results/fits --n1 1.3e5 --n-active 2.3e5 --d1 4e5 --extra-tokens 2e5``

Given a dense model of N1 (non-embedding) parameters already trained on D1 tokens (the sunk cost), an MoE of
N_active active parameters, and a budget of extra tokens (``--extra-tokens``) or extra FLOPs
(``--extra-flops``, C = 6 N D), the planner predicts the validation loss of

* ``upcycle``: the upcycled MoE after D2 = budget more tokens, from the ``upcycled`` law (or ``joint_upcycled``,
  which also varies N1);
* ``scratch_same_tokens``: an MoE from scratch trained on D2 tokens (paper A1.5, first framing);
* ``scratch_same_compute``: an MoE from scratch given the same total compute, sunk dense cost included:
  D = D2 + (N1 / N_active) D1 (second framing);
* ``dense_continued``: the dense model after D1 + D2 tokens, read from the dense law as one run of that length
  (an optimistic bound: a re-warmed continuation of an annealed run does worse at small scale).

It also solves for the threshold D2* beyond which scratch beats upcycling under each framing (the paper's
Eq. 13 curve at this D1 and N1), and, for a total budget ``--total-flops``, the compute-optimal split of
C = 6 N1 D1 + 6 N_active D2 between the dense and the upcycled phase. Scratch and dense predictions use the
``chinchilla`` laws fitted to MoE-from-scratch and dense runs with N = N1 (the paper fits the MoE law in N1).
Predictions outside the fitted data ranges are flagged (a warning naming the range; beyond ``--max-extrapolation``
times the range it is an error).
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from stages.artifacts import read_json, write_text
from stages.cli import ArgumentParser, UserError, run
from stages.fit import predict

SEARCH = (1e3, 1e16)  # token range searched for thresholds and optimal splits


class Laws:
    """The fitted laws the planner needs, read from fit JSON files, with their data ranges."""

    def __init__(self, fits_dir: Path, names: dict[str, str]) -> None:
        self.fits: dict[str, dict[str, Any]] = {}
        for role, name in names.items():
            path = fits_dir / f"{name}.json"
            if path.exists():
                fit = read_json(path)
                if "law" not in fit or "params" not in fit or any(v is None for v in fit["params"].values()):
                    raise UserError(f"{path}: not a usable fit JSON (law and finite params needed)")
                self.fits[role] = fit
        if "upcycle" not in self.fits:
            wanted = names["upcycle"]
            raise UserError(f"{fits_dir}/{wanted}.json: no fit of the upcycled law (fit it first, or name it with "
                            f"--upcycled-fit); the planner cannot predict upcycling without it")
        law = self.fits["upcycle"]["law"]
        if law not in ("upcycled", "upcycled_no_interaction", "upcycled_additive", "joint_upcycled"):
            raise UserError(f"{fits_dir}/{names['upcycle']}.json: law {law!r} is not an upcycled (D1, D2) law")

    def has(self, role: str) -> bool:
        return role in self.fits

    def loss(self, role: str, **columns: float) -> float:
        fit = self.fits[role]
        frame = pd.DataFrame({k: [float(v)] for k, v in columns.items()})
        return float(predict(fit["law"], fit["params"], frame)[0])

    def upcycled(self, n1: float, d1: float, d2: float) -> float:
        cols = {"D1": d1, "D2": d2}
        if self.fits["upcycle"]["law"] == "joint_upcycled":
            cols["N1"] = n1
        return self.loss("upcycle", **cols)

    def extrapolation(self, role: str, max_factor: float, **columns: float) -> list[str]:
        """Warnings for columns outside the fitted range; an error beyond ``max_factor`` times the range."""
        out = []
        ranges = self.fits[role].get("ranges")
        if not ranges:
            return [f"{role}: the fit records no data ranges (fitted by an older stages.fit): extrapolation unchecked"]
        for col, value in columns.items():
            if col not in ranges:
                continue
            lo, hi = ranges[col]
            if not lo <= value <= hi:
                factor = lo / value if value < lo else value / hi
                message = (f"{role}: {col} = {value:.4g} is outside the fitted range [{lo:.4g}, {hi:.4g}] "
                           f"(x{factor:.3g})")
                if factor > max_factor:
                    raise UserError(message + f"; more than --max-extrapolation {max_factor:g}: refusing to predict")
                out.append(message)
        return out


def threshold(gap) -> tuple[float | None, bool]:
    """Where ``gap(log D2)`` = log L_upcycle - log L_scratch first changes sign, and whether upcycling wins below it.

    Returns (None, upcycling_wins) when the sign never changes over the searched range.
    """
    grid = np.linspace(math.log(SEARCH[0]), math.log(SEARCH[1]), 241)
    values = np.array([gap(x) for x in grid])
    upcycle_wins_first = bool(values[0] < 0)
    change = np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)
    if len(change) == 0:
        return None, upcycle_wins_first
    i = int(change[0])
    return float(math.exp(optimize.brentq(gap, grid[i], grid[i + 1], xtol=1e-10))), upcycle_wins_first


def _threshold_note(value: float | None, upcycle_first: bool) -> str:
    if value is None:
        who = "upcycling" if upcycle_first else "scratch"
        return f"no crossing for D2 in {SEARCH[0]:.0e}..{SEARCH[1]:.0e}: {who} wins throughout"
    first, then = ("upcycling", "scratch") if upcycle_first else ("scratch", "upcycling")
    return f"D2*: {first} wins below, {then} above"


def plan(laws: Laws, n1: float, n_active: float, d1: float, extra_tokens: float, total_flops: float | None,
         max_extrapolation: float) -> tuple[pd.DataFrame, list[str]]:
    """The decision table and the extrapolation warnings."""
    warnings = laws.extrapolation("upcycle", max_extrapolation, D1=d1, D2=extra_tokens, N1=n1)
    rows: list[dict[str, Any]] = []

    def add(option: str, loss: float, tokens: float, flops: float, note: str) -> None:
        rows.append({"option": option, "predicted_loss": loss, "tokens_this_phase": tokens,
                     "flops_extra": flops, "flops_total": flops + 6 * n1 * d1, "note": note})

    add("upcycle", laws.upcycled(n1, d1, extra_tokens), extra_tokens, 6 * n_active * extra_tokens,
        f"D1={d1:.4g} sunk, D2={extra_tokens:.4g}")
    if laws.has("scratch"):
        same_compute = extra_tokens + (n1 / n_active) * d1
        for option, tokens, note in (("scratch_same_tokens", extra_tokens, "MoE from scratch on D2 tokens"),
                                     ("scratch_same_compute", same_compute, "MoE from scratch, sunk compute too")):
            warnings += laws.extrapolation("scratch", max_extrapolation, N=n1, D=tokens)
            add(option, laws.loss("scratch", N=n1, D=tokens), tokens, 6 * n_active * tokens, note)
    if laws.has("dense"):
        warnings += laws.extrapolation("dense", max_extrapolation, N=n1, D=d1 + extra_tokens)
        add("dense_continued", laws.loss("dense", N=n1, D=d1 + extra_tokens), extra_tokens, 6 * n1 * extra_tokens,
            "dense law at D1 + D2 (optimistic for a re-warmed continuation)")

    if laws.has("scratch"):
        same_tokens = threshold(lambda x: math.log(laws.upcycled(n1, d1, math.exp(x)))
                                - math.log(laws.loss("scratch", N=n1, D=math.exp(x))))
        same_compute = threshold(lambda x: math.log(laws.upcycled(n1, d1, math.exp(x)))
                                 - math.log(laws.loss("scratch", N=n1, D=math.exp(x) + (n1 / n_active) * d1)))
        for option, (value, upcycle_first) in (("threshold_same_tokens", same_tokens),
                                               ("threshold_same_compute", same_compute)):
            rows.append({"option": option, "predicted_loss": float("nan"),
                         "tokens_this_phase": value if value is not None else float("nan"),
                         "flops_extra": float("nan"), "flops_total": float("nan"),
                         "note": _threshold_note(value, upcycle_first)})
    if total_flops is not None:
        row = optimal_split(laws, n1, n_active, total_flops)
        rows.append(row)
        warnings += laws.extrapolation("upcycle", math.inf, D1=row.pop("D1"), D2=row["tokens_this_phase"])
    return pd.DataFrame(rows), warnings


def optimal_split(laws: Laws, n1: float, n_active: float, total_flops: float) -> dict[str, Any]:
    """Minimise L_upcycle(D1, D2) subject to 6 N1 D1 + 6 N_active D2 = C, over the dense share of C."""
    def loss(share: float) -> float:
        d1, d2 = share * total_flops / (6 * n1), (1 - share) * total_flops / (6 * n_active)
        return laws.upcycled(n1, d1, d2) if d1 >= 1 and d2 >= 1 else float("inf")

    shares = np.linspace(0.01, 0.99, 99)
    best = shares[int(np.argmin([loss(s) for s in shares]))]
    res = optimize.minimize_scalar(loss, bounds=(max(0.001, best - 0.01), min(0.999, best + 0.01)), method="bounded",
                                   options={"xatol": 1e-8})
    share = float(res.x)
    d1, d2 = share * total_flops / (6 * n1), (1 - share) * total_flops / (6 * n_active)
    return {"option": "optimal_split", "predicted_loss": float(res.fun), "tokens_this_phase": d2, "D1": d1,
            "flops_extra": (1 - share) * total_flops, "flops_total": total_flops,
            "note": f"D1*={d1:.4g} ({share:.1%} of C on the dense phase), D2*={d2:.4g}"}


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.planner", description=__doc__.split("\n\n")[0])
    p.add_argument("--fits", required=True, help="directory of fit JSON files (results/fits)")
    p.add_argument("--n1", type=float, required=True, help="dense model size N1 (non-embedding parameters)")
    p.add_argument("--n-active", type=float, required=True, help="active parameters of the MoE")
    p.add_argument("--d1", type=float, required=True, help="tokens the dense model was trained on (sunk)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--extra-tokens", type=float, help="extra token budget D2")
    budget.add_argument("--extra-flops", type=float, help="extra compute budget (FLOPs, C = 6 N_active D2)")
    p.add_argument("--total-flops", type=float, help="also find the compute-optimal D1/D2 split of this budget")
    p.add_argument("--upcycled-fit", default="upcycled", help="fit name of the upcycled law (file stem)")
    p.add_argument("--scratch-fit", default="scratch_chinchilla", help="fit name of the MoE-from-scratch law")
    p.add_argument("--dense-fit", default="dense_chinchilla", help="fit name of the dense law")
    p.add_argument("--max-extrapolation", type=float, default=100.0,
                   help="refuse predictions further than this factor outside the fitted range")
    p.add_argument("--out", help="CSV to write (the table is also printed)")
    args = p.parse_args(argv)
    for key in ("n1", "n_active", "d1", "extra_tokens", "extra_flops", "total_flops"):
        value = getattr(args, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"--{key.replace('_', '-')}: must be a positive number, got {value}")
    fits_dir = Path(args.fits)
    if not fits_dir.is_dir():
        raise UserError(f"{fits_dir}: not a directory of fit JSON files")
    laws = Laws(fits_dir, {"upcycle": args.upcycled_fit, "scratch": args.scratch_fit, "dense": args.dense_fit})
    extra_tokens = args.extra_tokens if args.extra_tokens is not None else args.extra_flops / (6 * args.n_active)
    table, warnings = plan(laws, args.n1, args.n_active, args.d1, extra_tokens, args.total_flops,
                           args.max_extrapolation)
    for role in ("scratch", "dense"):
        if not laws.has(role):
            warnings.append(f"no {role} fit in {fits_dir}: {role} options not predicted")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n", float_format="%.6g")
    if args.out:
        write_text(args.out, buf.getvalue())
    with pd.option_context("display.width", 160, "display.max_colwidth", 70):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    best = table[table["option"].isin(["upcycle", "scratch_same_tokens", "scratch_same_compute", "dense_continued"])]
    best = best.loc[best["predicted_loss"].idxmin()]
    print(f"lowest predicted loss: {best['option']} ({best['predicted_loss']:.4f})")


if __name__ == "__main__":
    run(main)
