"""What each option of the decision predicts for one set of law parameters: its loss, tokens and compute.

The options and the compute ledger are described in stages.laws.planner, which runs :func:`evaluate` once for
the point estimates and once per bootstrap resample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from stages.laws.crossing import d2_crossings, threshold_note
from stages.laws.fitted import TOL, Array, Laws, Uses


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
        return bool(spent <= self.amount * (1 + TOL))

    def __str__(self) -> str:
        return f"{self.amount:.4g} extra {'tokens' if self.unit == 'tokens' else 'FLOPs'}"


@dataclass(frozen=True, kw_only=True)
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


def evaluate(
    laws: Laws,
    n1: float,
    n_active: float,
    d1: float,
    budget: Budget | float,
    total_flops: float | None,
    n_grown: float | None = None,
) -> dict[str, Outcome]:
    """Every option and threshold for one set of law parameters (``grow`` with a grow fit and ``n_grown``; ``expand``
    with an expand fit: an MoE of N_active active parameters from scratch, trained on D1 tokens instead of the dense
    model, then expanded to more experts at the same top-k and trained on the extra budget)."""
    budget = budget if isinstance(budget, Budget) else Budget(float(budget))
    sunk = 6 * n1 * d1
    d2 = budget.tokens(n_active)
    extra = 6 * n_active * d2
    out = {
        "upcycle": Outcome(
            loss=float(laws.upcycled(n1, d1, d2)[0]),
            tokens=d2,
            spent_tokens=d2,
            flops_extra=extra,
            flops_total=sunk + extra,
            note=f"upcycled MoE: D1={d1:.4g} sunk, D2={d2:.4g} more tokens",
            uses=(("upcycle", laws.upcycle_columns(n1, d1, d2)),),
        )
    }
    if laws.has("scratch"):
        sunk_as_moe_tokens = sunk / (6 * n_active)  # (N1 / N_active) D1
        same = d2 + sunk_as_moe_tokens
        out["scratch_same_tokens"] = Outcome(
            loss=float(laws.loss("scratch", N=n1, D=d2)[0]),
            tokens=d2,
            spent_tokens=d2,
            flops_extra=extra,
            flops_total=extra,
            note="MoE from scratch on the same D2 tokens (same extra budget; the dense checkpoint unused)",
            uses=(("scratch", {"N": n1, "D": d2}),),
        )
        out["scratch_same_compute"] = Outcome(
            loss=float(laws.loss("scratch", N=n1, D=same)[0]),
            tokens=same,
            spent_tokens=same,
            flops_extra=6 * n_active * same,
            flops_total=6 * n_active * same,
            note="MoE from scratch on D2 + (N1/N_active) D1 tokens: the upcycled model's total compute",
            uses=(("scratch", {"N": n1, "D": same}),),
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
                loss=math.nan,
                tokens=root,
                spent_tokens=math.nan,
                flops_extra=6 * n_active * root,
                flops_total=sunk + 6 * n_active * root,
                note=threshold_note(roots, upcycle_first),
                uses=uses,
                later=later,
            )
    if laws.has("dense"):
        dd = budget.tokens(n1)
        out["dense_continued"] = Outcome(
            loss=float(laws.loss("dense", N=n1, D=d1 + dd)[0]),
            tokens=dd,
            spent_tokens=dd,
            flops_extra=6 * n1 * dd,
            flops_total=sunk + 6 * n1 * dd,
            note=f"dense law at D1 + {dd:.4g} tokens as one run (optimistic for a re-warmed continuation)",
            uses=(("dense", {"N": n1, "D": d1 + dd}),),
        )
    if laws.has("grow") and n_grown:
        dg = budget.tokens(n_grown)
        columns = laws.upcycle_columns(n1, d1, dg, "grow")
        out["grow"] = Outcome(
            loss=float(laws.loss("grow", **columns)[0]),
            tokens=dg,
            spent_tokens=dg,
            flops_extra=6 * n_grown * dg,
            flops_total=sunk + 6 * n_grown * dg,
            note=f"dense model grown to N={n_grown:.4g} (D1={d1:.4g} sunk), then D2={dg:.4g} more tokens "
            "(grown-run law)",
            uses=(("grow", columns),),
        )
    if laws.has("expand"):
        columns = laws.upcycle_columns(n1, d1, d2, "expand")
        out["expand"] = Outcome(
            loss=float(laws.loss("expand", **columns)[0]),
            tokens=d2,
            spent_tokens=d2,
            flops_extra=extra,
            flops_total=6 * n_active * d1 + extra,  # per-token cost is unchanged by the expansion (top-k fixed)
            note=f"MoE of N_active={n_active:.4g} from scratch on D1={d1:.4g} tokens (sunk, in place of the dense "
            f"model), expanded to more experts at the same top-k, then D2={d2:.4g} more tokens (expanded-run law)",
            uses=(("expand", columns),),
        )
    if total_flops is not None:
        loss, best_d1, best_d2 = optimal_split(laws, n1, n_active, total_flops)
        note = (
            f"fresh run: D1*={best_d1:.4g} ({6 * n1 * best_d1 / total_flops:.1%} of C on the dense phase), "
            f"D2*={best_d2:.4g}"
        )
        out["optimal_split"] = Outcome(
            loss=loss,
            tokens=best_d2,
            spent_tokens=best_d1 + best_d2,
            flops_extra=total_flops,
            flops_total=total_flops,
            note=note,
            uses=(("upcycle", laws.upcycle_columns(n1, best_d1, best_d2)),),
        )
    return out
