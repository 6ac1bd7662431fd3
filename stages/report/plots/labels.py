"""How figures write numbers, budgets, fitted parameters and diagnostic flags (no drawing here)."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from typing import Any

import pandas as pd

from stages.core.cli import UserError, parse_tokens
from stages.laws.forms import FLOOR, get_law

# A floor below this many nats prints as "≈0 (collapsed)" when the fit has no diagnostics block: the
# diagnostics call a floor collapsed below 1e-6 of the smallest loss, and losses here are O(1) nats.
COLLAPSED_FLOOR = 1e-6


UNITS = {"N": "parameters", "N1": "parameters", "N_active": "parameters", "D": "tokens", "D1": "tokens", "D2": "tokens"}


_GREEK = ("alpha", "beta", "gamma", "delta")


# The diagnostics' flags that format_params already writes next to each value it prints.
SPELLED_BY_VALUE = ("collapsed", "at bound")


def flagged(fit: dict[str, Any], sep: str = " ", shown: Sequence[str] = ()) -> str:
    """ " (collapsed: E; not identified: A)" for a fit whose diagnostics flag it; "" if ok or not diagnosed.

    ``sep`` goes before the parenthesis ("\n" puts it on its own line under a long title). ``shown``: the
    parameters the title already prints with :func:`format_params`, whose collapse or bound it spells next to the
    value; those flags are left out here, so that no title says "collapsed" twice."""
    short = (fit.get("diagnostics") or {}).get("short")
    if not short or short == "ok":
        return ""
    groups = []
    for group in short.split("; "):
        what, colon, names = group.partition(": ")
        if colon and what in SPELLED_BY_VALUE:
            kept = [n for n in names.split(", ") if n not in shown]
            group = f"{what}: {', '.join(kept)}" if kept else ""
        if group:
            groups.append(group)
    return f"{sep}({'; '.join(groups)})" if groups else ""


def flagged_fits(fits: dict[str, dict[str, Any]], names: Sequence[str]) -> str:
    """ "name (flags); ..." over the named fits that are flagged, "" if none."""
    return "; ".join(f"{name}{flagged(fits[name])}" for name in names if name in fits and flagged(fits[name]))


def count_label(n: float) -> str:
    """100K, 1.5M, 2B (three significant digits): token and parameter counts that have no label of their own."""
    if not math.isfinite(n):
        return str(n)
    n = float(f"{n:.3g}")  # round first, so that 999,900 reads 1M and not 1e+03K
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def sci_label(value: float, digits: int = 3) -> str:
    """Mathtext m x 10^k, "10^k" when m is 1: FLOPs and numbers far from 1, never Python's 1.24e-35."""
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    if mantissa in ("1", "-1"):
        return f"${mantissa[:-1]}10^{{{int(exponent)}}}$"
    return f"${mantissa}\\times10^{{{int(exponent)}}}$"


def format_number(value: float | None, digits: int = 3) -> str:
    """A fitted number for a title: plain between 1e-3 and 1e5 (0.017, 1144), mathtext powers of ten beyond."""
    if value is None or not math.isfinite(value):
        return "not finite"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 10**digits:
        return f"{value:.{digits}g}"
    if 10**digits <= abs(value) < 1e5:
        return f"{value:.0f}"
    return sci_label(value, digits)


def param_symbol(name: str) -> str:
    """alpha1 -> $\\alpha_1$, beta -> $\\beta$, d2 -> $d_2$; A, B, E stay plain, as the papers write them."""
    match = re.fullmatch(r"([A-Za-z]+?)_?(\d+)", name)
    base, index = match.groups() if match else (name, "")
    if base in _GREEK:
        base = "\\" + base
    elif not index:
        return name
    return f"${base}_{{{index}}}$" if index else f"${base}$"


def format_params(fit: dict[str, Any], names: Sequence[str] | None = None) -> str:
    """ "$\\alpha_1$=0.373, ..., E≈0 (collapsed)": a fit's parameters as a title reads them.

    A parameter its diagnostics (stages.laws.diagnostics, ``bounds``) put at a bound says which; a collapsed
    floor reads "≈0" rather than its last-bit value (1.24e-35 says nothing but "zero"). Fits from before the
    diagnostics: a floor below ``COLLAPSED_FLOOR`` counts as collapsed.
    """
    roles = get_law(fit["law"]).roles
    bounds = (fit.get("diagnostics") or {}).get("bounds") or {}
    parts = []
    for name in names if names is not None else list(fit["params"]):
        value, symbol = fit["params"].get(name), param_symbol(name)
        if name in bounds:
            bound = (bounds[name] or {}).get("bound")
        else:
            tiny = value is not None and roles.get(name) == FLOOR and abs(value) < COLLAPSED_FLOOR
            bound = "collapsed" if tiny else None
        if bound == "collapsed" and roles.get(name) == FLOOR:
            parts.append(f"{symbol}≈0 (collapsed)")
        elif bound == "collapsed":
            parts.append(f"{symbol}={format_number(value)} (term collapsed)")
        elif bound:
            parts.append(f"{symbol}={format_number(value)} (at bound: {bound})")
        else:
            parts.append(f"{symbol}={format_number(value)}")
    return ", ".join(parts)


def budget_labels(rows: pd.DataFrame, column: str) -> dict[float, str]:
    """Each value of a token column (D1, D2, D) -> the budget as the run directories spell it.

    A run's path carries the budget the config asked for (``d1_16K``, Run.run_id in stages.workflow.grid), the
    table the tokens it trained, rounded down to whole optimizer steps (15872, which would print as 15.9K). So
    the label is read back from the run_id segment ``<column>_<label>`` and checked with the config's own parser
    (core.cli.parse_tokens); a table without such run_ids (any CSV) gets :func:`count_label` of the value.
    """
    prefix = column.lower() + "_"
    run_ids = rows["run_id"] if "run_id" in rows.columns else pd.Series("", index=rows.index)
    out: dict[float, str] = {}
    for value, run_id in zip(rows[column], run_ids, strict=True):
        if pd.isna(value) or float(value) in out:
            continue
        label = next((s[len(prefix) :] for s in str(run_id).split("/") if s.startswith(prefix)), "")
        try:
            parse_tokens(label, column)
        except UserError:
            label = count_label(float(value))
        out[float(value)] = label
    return out


def axis_label(column: str) -> str:
    """ "D2 (tokens)": a law column with its unit."""
    return f"{column} ({UNITS[column]})" if column in UNITS else column


def wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` characters (titles must fit their panel)."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))
