"""How far a study's headline numbers move between two runs of the same grid on different machines (another CPU
kernel path, BLAS or thread count): the spread the published numbers carry, and the verdicts fragile across it.

Both runs have the same config and code, so every difference is floating-point order: kernels that sum in another
order give other roundings, which training amplifies (the tiny grid's runs part by up to ~0.07 nats after enough
steps). Headlines compared: each run's validation loss, each fit's parameters, each held-out check's largest
relative error, the predicted D2* at each D1 and every finding's verdict; a verdict that differs is *fragile*.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from stages.core.artifacts import read_json
from stages.core.cli import UserError, parse_tokens

COLUMNS = ["quantity", "reference", "other", "difference", "relative", "note"]
D2_STAR = re.compile(r"D1 ([0-9.]+[KMBT]?): D2\* ([0-9.]+[KMBT]?|none)")


def headlines(results: Path) -> dict[str, Any]:
    """The headline numbers of the study under ``results`` (a study root: tables/, fits/)."""
    runs_csv = results / "tables" / "runs.csv"
    findings_csv = results / "tables" / "findings.csv"
    for path in (runs_csv, findings_csv):
        if not path.is_file():
            raise UserError(f"{path}: not found (run the study first)")
    runs = pd.read_csv(runs_csv)
    findings = pd.read_csv(findings_csv, dtype=str, keep_default_na=False)
    out: dict[str, Any] = {
        "val_loss": dict(zip(runs["run_id"], runs["val_loss"], strict=True)),
        "verdicts": dict(zip(findings["finding"], findings["verdict"], strict=True)),
        "params": {},
        "heldout": {},
        "d2_star": {},
    }
    for path in sorted((results / "fits").glob("*.json")):
        if path.name == "fit_params.json":
            continue
        fit = read_json(path)
        if not isinstance(fit, dict) or "params" not in fit:
            continue
        out["params"].update({f"{path.stem}.{k}": float(v) for k, v in fit["params"].items()})
        rows = (fit.get("holdout") or {}).get("rows") or []
        if rows:
            out["heldout"][path.stem] = max(abs(float(r["rel_err"])) for r in rows)
    evidence = " ".join(findings.loc[findings["finding"] == "upcycle_vs_scratch", "evidence"])
    out["d2_star"] = {
        parse_tokens(d1): math.nan if d2 == "none" else float(parse_tokens(d2)) for d1, d2 in D2_STAR.findall(evidence)
    }
    return out


def _line(quantity: str, a: float, b: float, note: str = "") -> dict[str, Any]:
    diff = b - a
    rel = diff / abs(a) if a and math.isfinite(a) else math.nan
    return {"quantity": quantity, "reference": a, "other": b, "difference": diff, "relative": rel, "note": note}


def spread_table(reference: dict[str, Any], other: dict[str, Any]) -> pd.DataFrame:
    """One line per headline present in both: the runs' validation losses summarised (largest and mean absolute
    difference), then fit parameters, held-out errors, D2* and verdicts (a changed verdict is marked fragile)."""
    lines = []
    common = sorted(set(reference["val_loss"]) & set(other["val_loss"]))
    if common:
        diffs = pd.Series([other["val_loss"][r] - reference["val_loss"][r] for r in common], index=common)
        worst = diffs.abs().idxmax()
        lines.append(
            _line(f"val_loss, largest |difference| ({worst})", reference["val_loss"][worst], other["val_loss"][worst])
        )
        lines.append(
            {"quantity": f"val_loss, mean |difference| over {len(common)} runs", "reference": math.nan,
             "other": math.nan, "difference": float(diffs.abs().mean()), "relative": math.nan, "note": ""}
        )  # fmt: skip
    for key in sorted(set(reference["params"]) & set(other["params"])):
        lines.append(_line(key, reference["params"][key], other["params"][key]))
    for key in sorted(set(reference["heldout"]) & set(other["heldout"])):
        lines.append(_line(f"{key}: held-out max |rel err|", reference["heldout"][key], other["heldout"][key]))
    for d1 in sorted(set(reference["d2_star"]) & set(other["d2_star"])):
        a, b = reference["d2_star"][d1], other["d2_star"][d1]
        fragile = (
            "fragile: a crossing on one side only (none: no D2* in the laws' range)"
            if math.isnan(a) != math.isnan(b)
            else ""
        )
        lines.append(_line(f"D2* at D1 = {d1:,}", a, b, fragile))
    for finding in sorted(set(reference["verdicts"]) & set(other["verdicts"])):
        a, b = reference["verdicts"][finding], other["verdicts"][finding]
        lines.append(
            {"quantity": f"verdict {finding}", "reference": a, "other": b, "difference": "", "relative": "",
             "note": "fragile: the verdict changes" if a != b else "same"}
        )  # fmt: skip
    return pd.DataFrame(lines, columns=COLUMNS)
