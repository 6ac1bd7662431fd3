"""How well a fit describes its data: in-sample errors, sanity checks, held-out predictions and the statsmodels
diagnostics of the two-stage (D1, D2) laws.

The statsmodels block serves the two-stage laws: per-D1 power laws in D2, the bilinear log form at the fitted
floor (OLS and robust), and alpha3 by two stages (the per-D1 exponents regressed on ln D1). When a fit has
failed (a parameter at a bound or not identified) is stages.laws.diagnostics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from stages.laws.forms import LOSS, Law
from stages.laws.regression import coefficients, ols, rlm, summary_text


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
    """Basic checks of a fitted law: the constant floor sits below every loss and the decay exponents are positive."""
    constant = [all(not m.variables for m in term) for term in law.terms]
    floor = float(np.exp(law.log_terms(params, frame.iloc[:1]))[constant].sum())
    decays = [m.param for m in law.monomials if m.variables and m.sign < 0]
    return {
        "floor_below_min_loss": bool(floor < frame[LOSS].min()),
        "exponents_positive": bool(all(params[p] > 0 for p in decays)),
    }


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
        res = ols("logL ~ logD2", part)
        entry = {
            "D1": float(value),
            "n": len(part),
            "slope_log_loss": float(res.params["logD2"]),
            "slope_log_loss_se": float(res.bse["logD2"]),
        }
        texts.append(f"per-D1 power law, D1 = {entry['D1']:g}: log L ~ log D2\n{summary_text(res)}")
        if bool(positive[part.index].all()):
            res = ols("logExcess ~ logD2", part)
            entry.update(slope_log_excess=float(res.params["logD2"]), slope_log_excess_se=float(res.bse["logD2"]))
        out["per_D1"].append(entry)
    two_stage = interaction_from_slopes(out["per_D1"])
    if two_stage:
        out["alpha3_two_stage"] = two_stage
    if positive.all() and len(data) > 4:
        res = ols("logExcess ~ logD1 * logD2", data)
        out["bilinear"] = {
            "formula": "log(L - floor) ~ logD1 * logD2",
            **coefficients(res),
            "as_law": {
                "A": float(np.exp(res.params["Intercept"])),
                "alpha1": float(-res.params["logD1"]),
                "alpha2": float(-res.params["logD2"]),
                "alpha3": float(res.params["logD1:logD2"]),
            },
        }
        texts.append(f"bilinear form at the fitted floor: log(L - floor) ~ logD1 * logD2\n{summary_text(res)}")
        robust = rlm("logExcess ~ logD1 * logD2", data)
        out["bilinear_rlm"] = {
            "formula": "log(L - floor) ~ logD1 * logD2, Huber T (t = 1.345 robust-scale units, not delta = 1e-3)",
            "params": {k: float(v) for k, v in robust.params.items()},
            "se": {k: float(v) for k, v in robust.bse.items()},
        }
        texts.append(f"robust (RLM, Huber T) bilinear form at the fitted floor\n{summary_text(robust)}")
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
        out[variant] = {
            "alpha3": alpha3,
            "se": alpha3_se,
            "ci95": [alpha3 - t * alpha3_se, alpha3 + t * alpha3_se],
            "alpha2": float(res.params[0]),
            "n_D1": len(rows),
        }
    return out
