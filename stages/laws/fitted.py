"""Fitted laws by role (upcycle, scratch, dense, grow, expand): loaded from fit JSON files or a published set,
evaluated, and checked against the data ranges they were fitted on.

The planner, the findings table and the figures read their laws through :class:`Laws`, so a fit is validated
(law and finite parameters present, an upcycled law where one is needed) in one place, and an extrapolation is
measured the same way everywhere: the factor max(value / hi, lo / value) over the law's inputs (1 inside).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.artifacts import read_json
from stages.core.cli import UserError
from stages.laws.forms import predict
from stages.laws.published import CAVEATS, FIT_SETS, fit_set

UPCYCLED_LAWS = ("upcycled", "upcycled_no_interaction", "upcycled_additive", "joint_upcycled")
TOL = 1e-9  # relative slack of "inside the range" (and of the planner's budget check)
Array = np.ndarray
Uses = tuple[tuple[str, dict[str, float]], ...]  # the laws behind a number: (role, its input columns) pairs


class Laws:
    """The fitted laws the planner needs (by role: upcycle, scratch, dense, grow, expand), with their data ranges."""

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
        for role in ("upcycle", "grow", "expand"):  # the D1 x D2 law, fitted on upcycled, grown or expanded runs
            if role in fits and fits[role]["law"] not in UPCYCLED_LAWS:
                law = fits[role]["law"]
                raise UserError(f"{where(names[role])}: law {law!r} is not an upcycled (D1, D2) law")
        missing = {role: why_missing(role, name) for role, name in names.items() if role not in fits}
        return cls(fits=fits, missing=missing, caveats=caveats)

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
        return Laws(fits=fits)

    def loss(self, role: str, **columns: float | Array) -> Array:
        """The law of ``role`` at the given columns (scalars and 1-D arrays broadcast together)."""
        fit = self.fits[role]
        arrays = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, float)) for v in columns.values()))
        return predict(fit["law"], fit["params"], pd.DataFrame(dict(zip(columns, arrays, strict=True))))

    def upcycle_columns(self, n1: float, d1: Any, d2: Any, role: str = "upcycle") -> dict[str, Any]:
        """The inputs of the upcycled law of ``role`` (upcycle; grow or expand: the same law fitted on grown or expanded
        runs); N1 only for ``joint_upcycled``."""
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
            if factor > 1 + TOL:
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
