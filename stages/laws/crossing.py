"""Where two fitted laws cross: the D2* at which upcycling and an MoE from scratch reach the same loss.

The paper's Eq. 13 solved numerically at one D1 and N1, for either framing of the scratch baseline (the same
extra tokens, or the upcycled model's whole compute: the scratch run gets ``scratch_extra_tokens`` more).
Fitted laws can cross more than once (e.g. a weakly identified floor E), so every crossing in the searched
range is returned, never only the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import optimize

from stages.laws.fitted import Array, Laws

SEARCH = (1e3, 1e16)  # token range searched for thresholds


def crossings(gap: Callable[[Array], Array]) -> tuple[list[float], bool]:
    """Every D2 where ``gap(log D2)`` = log L_upcycle - log L_scratch changes sign, and whether upcycling wins below
    the first one.

    All crossings are returned in increasing order, so a caller never mistakes the first one for the whole
    story. Empty when the sign never changes over the searched range.
    """
    grid = np.linspace(math.log(SEARCH[0]), math.log(SEARCH[1]), 241)
    values = gap(grid)
    upcycle_wins_first = bool(values[0] < 0)
    roots = []
    for i in np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0):
        root = optimize.brentq(lambda x: float(gap(np.array([x]))[0]), grid[i], grid[i + 1], xtol=1e-10)
        roots.append(float(math.exp(root)))
    return roots, upcycle_wins_first


def log_gap(laws: Laws, n1: float, d1: float | Array, d2: float | Array, scratch_extra_tokens: float | Array) -> Array:
    """log L_upcycle - log L_scratch, the scratch MoE trained on D2 + ``scratch_extra_tokens``: < 0 where upcycling
    wins (arrays broadcast together)."""
    d2 = np.asarray(d2, float)
    return np.log(laws.upcycled(n1, d1, d2)) - np.log(laws.loss("scratch", N=n1, D=d2 + scratch_extra_tokens))


def predicted_gap(laws: Laws, n1: float, d1: float, d2: float) -> float:
    """L_upcycle - L_scratch in nats the laws predict at (D1, D2), the scratch MoE trained on D2 tokens: how large a
    difference a measured pair at those budgets should show."""
    upcycled = float(np.ravel(laws.upcycled(n1, d1, np.asarray([d2], float)))[0])
    return upcycled - float(np.ravel(laws.loss("scratch", N=n1, D=np.asarray([d2], float)))[0])


def d2_crossings(laws: Laws, n1: float, d1: float, scratch_extra_tokens: float) -> tuple[list[float], bool]:
    """The D2 values where the upcycled MoE and an MoE from scratch trained on D2 + ``scratch_extra_tokens`` tie."""
    return crossings(lambda x: log_gap(laws, n1, d1, np.exp(x), scratch_extra_tokens))


def threshold_note(roots: list[float], upcycle_first: bool) -> str:
    """Who wins on either side of the first crossing, and where the laws cross again."""
    if not roots:
        who = "upcycling" if upcycle_first else "scratch"
        return f"no crossing for D2 in {SEARCH[0]:.0e}..{SEARCH[1]:.0e}: {who} wins throughout"
    first, then = ("upcycling", "scratch") if upcycle_first else ("scratch", "upcycling")
    note = f"D2*: {first} wins below, {then} above"
    if len(roots) > 1:
        note += "; the laws cross again at " + ", ".join(f"{r:.4g}" for r in roots[1:])
    return note
