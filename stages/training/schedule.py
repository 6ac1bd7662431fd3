"""Learning-rate schedules, all ending at the run's own token budget.

* ``cosine``: linear warmup to the peak, cosine decay to ``min_lr`` at the last step. Dense and
  from-scratch runs use it; for an upcycled run it is He et al.'s "reset" policy (warm up to the peak
  again, then decay over D2), which they found best.
* ``wsd`` (warmup-stable-decay, Hägele et al. 2024): linear warmup, the peak held, then a decay over the last
  ``decay_frac`` of the run to ``min_lr`` with shape ``linear``, ``1-sqrt`` (their best) or ``cosine``. Up to
  the decay, the schedule does not depend on the run's length, so runs of several budgets share one stable
  run and differ only in their cooldowns.
* ``constant_min``: the dense run's final learning rate, held constant (He et al.'s constant min-LR arm).
* ``continue``: resume a cosine schedule planned for ``prior + total`` steps at step ``prior``, i.e. as if
  the parent run had been planned to continue for D2 more tokens (no warmup).

Warmup is either a fraction of the run or a fixed number of steps: a fraction makes short runs warm up for
only a few steps (20 steps for a 200K-token run at 512 tokens per step), which is what made the small
grid's losses non-monotone in model size; a fixed count keeps every budget on the same footing.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass

from stages.training.options import DecayShape, LRPolicy

POLICIES = typing.get_args(LRPolicy)
DECAY_SHAPES = typing.get_args(DecayShape)
WARMING = ("cosine", "wsd")  # the policies that warm up (constant_min and continue start where they are)


@dataclass(frozen=True)
class Schedule:
    policy: str
    peak_lr: float
    min_lr: float
    total_steps: int
    warmup_steps: int = 0
    prior_steps: int = 0  # steps of the parent run (``continue`` only)
    decay_steps: int = 0  # length of the final decay (``wsd`` only)
    decay_shape: str = "1-sqrt"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown lr policy {self.policy!r}; expected one of {POLICIES}")
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(f"unknown decay shape {self.decay_shape!r}; expected one of {DECAY_SHAPES}")

    def lr(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        if self.policy == "constant_min":
            return self.min_lr
        if self.policy == "continue":
            return _cosine(self.prior_steps + step, self.prior_steps + self.total_steps, self.peak_lr, self.min_lr)
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.policy == "wsd":
            return self._wsd(step)
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        return _cosine(step - self.warmup_steps, decay_steps, self.peak_lr, self.min_lr)

    @property
    def decay_start(self) -> int:
        """First step of the ``wsd`` decay: the branch point of a cooldown from the stable run."""
        return self.total_steps - self.decay_steps

    def _wsd(self, step: int) -> float:
        if step < self.decay_start:
            return self.peak_lr
        progress = (step - self.decay_start + 1) / self.decay_steps  # (0, 1]: the last step reaches min_lr
        if self.decay_shape == "linear":
            scale = 1.0 - progress
        elif self.decay_shape == "1-sqrt":
            scale = 1.0 - math.sqrt(progress)
        else:
            scale = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + (self.peak_lr - self.min_lr) * scale


def _cosine(step: int, total: int, peak: float, floor: float) -> float:
    """Cosine from ``peak`` at step 0 to ``floor`` at step ``total - 1``."""
    if total <= 1:
        return floor
    progress = min(1.0, step / (total - 1))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def warmup_steps(total_steps: int, fraction: float, minimum: int = 1, fixed: int = 0) -> int:
    """Warmup length: ``fixed`` steps if given, else a fraction of the run; at least ``minimum``, less than the run."""
    if total_steps <= 1:
        return 0
    wanted = fixed if fixed > 0 else int(round(fraction * total_steps))
    return max(minimum, min(total_steps - 1, wanted))


def warmup_problem(policy: str, total_steps: int, fixed: int, run: str) -> str | None:
    """What is wrong with a fixed warmup of ``fixed`` steps for the ``policy`` run ``run`` of ``total_steps``
    steps, if anything: one that does not end before the run would be cut to it by :func:`warmup_steps`, silently
    training another schedule than the one asked for (for the policies that warm up)."""
    if policy in WARMING and 0 < total_steps <= fixed:
        return (
            f"{fixed} warmup steps do not end before the {total_steps} steps of {run} (lr policy {policy}); "
            "set fewer, or 0 to use train.warmup_frac"
        )
    return None


def decay_steps(total_steps: int, warmup: int, fraction: float) -> int:
    """Length of the ``wsd`` decay: a fraction of the run, at least one step, never into the warmup."""
    return max(1, min(total_steps - warmup, int(round(fraction * total_steps))))
