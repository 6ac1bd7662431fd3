"""The fitted-parameter table (the paper's Table 2 analogue) and the model comparison: rows and Markdown.

One row per fit: each parameter with its bootstrap 95% interval, in-sample and held-out errors, and for
comparing forms fitted to the same rows, AIC and BIC computed from the Gaussian likelihood of the log
residuals (n ln(RSS/n) + 2k, + k ln n). Those are exact for nested log-linear forms and a heuristic for the
Huber-fitted nonlinear ones; held-out error is the comparison that needs no likelihood.

The ``diagnostics`` column is "ok" or the fit's short list of flags (a parameter collapsed, at a bound or not
identified, an unhealthy bootstrap; stages.laws.diagnostics), "" for a fit JSON written before diagnostics.
An interval the bootstrap withheld (too few clusters, zero width) is an empty interval cell.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from stages.laws.forms import get_law


def fit_row(name: str, fit: dict[str, Any]) -> dict[str, Any]:
    """The table row of one fit JSON."""
    law = get_law(fit["law"])
    n, k = int(fit["n_points"]), len(law.params)
    quality = fit.get("fit") or {}
    rmse = quality.get("rmse_log")
    rss = n * rmse**2 if rmse is not None else math.nan
    row: dict[str, Any] = {
        "fit": name,
        "law": fit["law"],
        "where": fit.get("where") or "",
        "n_points": n,
        "n_params": k,
        "objective": fit.get("objective"),
        "rmse_log": rmse,
        "mean_abs_rel_err": quality.get("mean_abs_rel_err"),
        "aic_gaussian": n * math.log(rss / n) + 2 * k if rss > 0 else math.nan,
        "bic_gaussian": n * math.log(rss / n) + k * math.log(n) if rss > 0 else math.nan,
    }
    holdout = fit.get("holdout") or {}
    row["holdout_n"] = holdout.get("n", 0)
    row["holdout_rmse_log"] = holdout.get("rmse_log", math.nan)
    row["holdout_mean_abs_rel_err"] = holdout.get("mean_abs_rel_err", math.nan)
    ci = (fit.get("bootstrap") or {}).get("ci95") or {}
    for param, value in fit["params"].items():
        row[param] = value
        interval = ci.get(param)
        row[f"{param}_ci95"] = f"[{interval[0]:.4g}, {interval[1]:.4g}]" if interval else ""
    row["diagnostics"] = (fit.get("diagnostics") or {}).get("short", "")
    two_stage = ((fit.get("statsmodels") or {}).get("alpha3_two_stage") or {}).get("log_excess")
    if two_stage:  # alpha_eff(D1) regressed on ln D1: the interaction without the joint fit's floor trade-off
        row["alpha3_two_stage"] = two_stage["alpha3"]
        row["alpha3_two_stage_ci95"] = "[{:.4g}, {:.4g}]".format(*two_stage["ci95"])
    return row


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table with one line per fit and parameters written as value [95% CI]."""
    fixed = ["fit", "law", "n_points", "rmse_log", "holdout_rmse_log", "aic_gaussian", "bic_gaussian"]
    params = [c for c in table.columns if c not in fixed and not c.endswith("_ci95") and f"{c}_ci95" in table.columns]
    header = ["fit", "law", "n", *params, "rmse log", "held-out rmse log", "AIC", "BIC", "diagnostics"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def num(v: Any) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"

    for _, row in table.iterrows():
        cells = [row["fit"], row["law"], str(row["n_points"])]
        for p in params:
            value = row.get(p)
            cells.append("" if pd.isna(value) else f"{value:.4g} {row.get(f'{p}_ci95') or ''}".strip())
        cells += [
            num(row["rmse_log"]),
            num(row["holdout_rmse_log"]),
            num(row["aic_gaussian"]),
            num(row["bic_gaussian"]),
            row.get("diagnostics") if isinstance(row.get("diagnostics"), str) else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
