"""statsmodels OLS and robust (Huber T) regressions by formula, and their summaries with deterministic bytes.

statsmodels is imported on first use: it is slow to import and only the diagnostics and the profiled-floor
start need it.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pandas as pd


def ols(formula: str, data: pd.DataFrame) -> Any:
    """Ordinary least squares of a patsy ``formula`` on ``data``, fitted."""
    import statsmodels.formula.api as smf

    return smf.ols(formula, data).fit()


def rlm(formula: str, data: pd.DataFrame) -> Any:
    """Robust linear model (Huber T norm) of a patsy ``formula`` on ``data``, fitted."""
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    return smf.rlm(formula, data, M=sm.robust.norms.HuberT()).fit()


def coefficients(res: Any) -> dict[str, Any]:
    """Parameters, standard errors, R^2 and number of observations of a fitted OLS."""
    return {
        "params": {k: float(v) for k, v in res.params.items()},
        "se": {k: float(v) for k, v in res.bse.items()},
        "r2": float(res.rsquared),
        "n": int(res.nobs),
    }


def summary_text(res: Any) -> str:
    """statsmodels' summary without its date and time lines' values (outputs must be byte-deterministic)."""
    with warnings.catch_warnings():  # normality tests warn below 8 points; the numbers are still printed
        warnings.simplefilter("ignore")
        text = str(res.summary())
    return re.sub(
        r"^(Date:|Time:)(\s+)(\S.*?)(\s{2,})", lambda m: m[1] + m[2] + "-" * len(m[3]) + m[4], text, flags=re.M
    )
