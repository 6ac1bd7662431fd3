"""Paired comparisons: the noise of a difference between two arms that share a lineage, measured across seeds.

Two arms of a comparison that share a lineage share most of their noise: an upcycled run and the dense
continuation of the same parent share the parent and the data order, an upcycled run and the MoE from scratch of
the same seed share the data order. The yardstick of their difference is therefore the spread of that difference
across seeds, not the marginal seed noise of each arm (which counts the shared noise twice). ``grid.replicas``
trains seeds 2..n of a run with its whole lineage (model label ``s@k``, data order k), so seed k of one arm pairs
with seed k of the other: a row computes its differences on each seed's cells alone (:func:`seed_tables`) and
:func:`paired` turns the differences of the pairs trained at every seed into a t interval over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd
from scipy import stats

MIN_SEEDS = 3  # seed pairs a paired interval needs (2 degrees of freedom); fewer keep the marginal band
LEVEL = 0.95


def seed_tables(runs: pd.DataFrame, means: Callable[[pd.DataFrame], pd.DataFrame]) -> dict[int, pd.DataFrame]:
    """Seed index (1: the grid's own runs, k: replica k) -> the cells trained at that seed alone.

    ``means`` is the cell table builder (claims.cell_means); a runs table without a ``replica`` column is one seed.
    """
    replica = runs["replica"] if "replica" in runs.columns else pd.Series(1, index=runs.index)
    replica = replica.fillna(1).astype(int)
    return {int(k): means(runs[replica == k]) for k in sorted(replica.unique())}


@dataclass(frozen=True)
class Paired:
    """The mean difference of the replicated pairs across seeds, with its t interval (nan: fewer than 3 seeds)."""

    effect: float  # mean over seeds of that seed's mean difference over the replicated pairs
    low: float
    high: float
    seeds: int  # seed pairs: seeds at which every replicated pair has both arms
    pairs: tuple[str, ...]  # the replicated pairs, by the row's key
    sd: float = math.nan  # standard deviation across seeds of the per-seed difference (the paired noise)

    @property
    def enough(self) -> bool:
        return self.seeds >= MIN_SEEDS and math.isfinite(self.low)

    def sign(self) -> int:
        """+1 when the interval lies above zero, -1 below, 0 when it holds zero (or there are too few seeds)."""
        if not self.enough:
            return 0
        return 1 if self.low > 0 else (-1 if self.high < 0 else 0)

    def interval(self) -> str:
        if not self.enough:
            return f"{self.seeds} seed pair{'' if self.seeds == 1 else 's'} (< {MIN_SEEDS}): no paired interval"
        return f"paired {LEVEL:.0%} t [{self.low:+.4f}, {self.high:+.4f}]"

    def summary(self) -> str:
        """What the paired estimate rests on: the pairs, the seeds, the paired noise."""
        if not self.pairs or self.seeds < 2:
            return "no pair trained at more than one seed"
        names = ", ".join(self.pairs[:4]) + (f" and {len(self.pairs) - 4} more" if len(self.pairs) > 4 else "")
        text = f"paired over {self.seeds} seeds of {names}"
        return text + (f" (sd of the difference across seeds {self.sd:.4f})" if math.isfinite(self.sd) else "")


def t_interval(diffs: list[float], level: float = LEVEL) -> tuple[float, float, float, float]:
    """Mean, two-sided t interval and standard deviation of ``diffs`` (one difference per seed)."""
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, sd


def paired(tables: Mapping[int, pd.DataFrame], gaps: Callable[[pd.DataFrame], Mapping[str, float]]) -> Paired | None:
    """The paired estimate of a row whose ``gaps`` maps a cell table to {pair key: arm A - arm B}.

    ``gaps`` runs on each seed's cells: a pair is present at seed k when both arms (and the runs an arm interpolates
    between) were trained at seed k. The replicated pairs are those present at the largest set of seeds (ties: the
    set shared by the most pairs, then the lowest seeds); each seed's difference is the mean over them. None when
    no seed has a pair.
    """
    per_seed = {k: dict(gaps(t)) for k, t in sorted(tables.items()) if len(t)}
    present: dict[str, tuple[int, ...]] = {}
    for k, found in per_seed.items():
        for key, gap in found.items():
            if math.isfinite(gap):
                present[key] = (*present.get(key, ()), k)
    if not present:
        return None
    counts: dict[tuple[int, ...], int] = {}
    for seeds in present.values():
        counts[seeds] = counts.get(seeds, 0) + 1
    best = max(counts, key=lambda s: (len(s), sum(set(s) <= set(t) for t in present.values()), [-k for k in s]))
    keys = tuple(sorted(key for key, seeds in present.items() if set(best) <= set(seeds)))
    diffs = [math.fsum(per_seed[k][key] for key in keys) / len(keys) for k in best]
    mean, low, high, sd = t_interval(diffs)
    if len(best) < MIN_SEEDS:
        low = high = math.nan
    return Paired(mean, low, high, len(best), keys, sd)


def judge(estimate: Paired | None, better: int = -1) -> int | None:
    """+1: the paired interval excludes zero on the claimed side (``better``: -1 when the claim is a lower loss),
    -1: on the other side, 0: it holds zero; None: fewer than 3 seed pairs (the row keeps the marginal band)."""
    if estimate is None or not estimate.enough:
        return None
    return estimate.sign() * (1 if better > 0 else -1)
