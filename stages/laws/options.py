"""The fit option group: which law, on which rows, with which start grid, bootstrap and hold-out.

Torch-free: the workflow's config schema (each entry of ``fits``) is generated from it, and the fit rule
hands ``python -m stages.fit`` one validated ``--spec`` JSON built from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.core.options import option

GRID_SCHEMA = {"anyOf": [{"type": "string", "pattern": "^default$"}, {"type": "integer", "minimum": 1}]}


@dataclass(frozen=True)
class FitConfig:
    """One scaling-law fit of the runs table."""

    law: str = option(help="law to fit (python -m stages.fit --help lists them)")
    where: str = option("", help="pandas query selecting the rows")
    map: dict[str, str] = option({}, help="law column: table column")
    holdout: str = option("", help="pandas query of held-out rows (left out of the fit and predicted)")
    bootstrap: int = option(0, help="cluster-bootstrap resamples (0: none)", minimum=0)
    grid: str | int = option(
        "default",
        help="start grid: 'default' (the law's full grid; 4500 Hoffmann starts for chinchilla) or N "
        "evenly spaced starts of it",
        schema=GRID_SCHEMA,
    )
