"""The roles a fitted law plays in a decision, and the fit each role reads unless told otherwise.

The default names are the file stems ``stages.fit`` writes for the default config's ``fits``; the planner, the
findings table and the workflow's flags all start from them, so a renamed fit is renamed here once. Stdlib only:
the Snakefile imports it while building the DAG.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

UPCYCLE, SCRATCH, DENSE, GROW, EXPAND = "upcycle", "scratch", "dense", "grow", "expand"

DEFAULT_FITS: Mapping[str, str] = MappingProxyType(
    {UPCYCLE: "upcycled", SCRATCH: "scratch_chinchilla", DENSE: "dense_chinchilla"}
)
