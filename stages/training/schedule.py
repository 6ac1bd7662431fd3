"""Learning-rate schedules, all ending at the run's own token budget.

* ``cosine``: linear warmup to the peak, cosine decay to ``min_lr`` at the last step. Dense and
  from-scratch runs use it; for an upcycled run it is He et al.'s "reset" policy (warm up to the peak
  again, then decay over D2), which they found best.
* ``constant_min``: the dense run's final learning rate, held constant (He et al.'s constant min-LR arm).
* ``continue``: resume a cosine schedule planned for ``prior + total`` steps at step ``prior``, i.e. as if
  the parent run had been planned to continue for D2 more tokens (no warmup).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

POLICIES = ("cosine", "constant_min", "continue")


@dataclass(frozen=True)
class Schedule:
    policy: str
    peak_lr: float
    min_lr: float
    total_steps: int
    warmup_steps: int = 0
    prior_steps: int = 0  # steps of the parent run (``continue`` only)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown lr policy {self.policy!r}; expected one of {POLICIES}")

    def lr(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        if self.policy == "constant_min":
            return self.min_lr
        if self.policy == "continue":
            return _cosine(self.prior_steps + step, self.prior_steps + self.total_steps, self.peak_lr, self.min_lr)
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        return _cosine(step - self.warmup_steps, decay_steps, self.peak_lr, self.min_lr)


def _cosine(step: int, total: int, peak: float, floor: float) -> float:
    """Cosine from ``peak`` at step 0 to ``floor`` at step ``total - 1``."""
    if total <= 1:
        return floor
    progress = min(1.0, step / (total - 1))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def warmup_steps(total_steps: int, fraction: float, minimum: int = 1) -> int:
    """Warmup length: a fraction of the run, at least ``minimum`` and less than the run."""
    return max(minimum, min(total_steps - 1, int(round(fraction * total_steps)))) if total_steps > 1 else 0
