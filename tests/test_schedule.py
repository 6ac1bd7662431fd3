"""Learning-rate schedules end at the run's own budget."""

from __future__ import annotations

import pytest

from stages.training.schedule import Schedule, warmup_steps


def test_cosine_warms_up_peaks_and_ends_at_min():
    s = Schedule("cosine", peak_lr=1.0, min_lr=0.1, total_steps=100, warmup_steps=10)
    lrs = [s.lr(i) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))  # monotone decay after warmup


def test_constant_min_and_continue():
    assert Schedule("constant_min", 1.0, 0.1, 50).lr(7) == 0.1
    cont = Schedule("continue", 1.0, 0.0, total_steps=100, prior_steps=100)
    assert cont.lr(0) == pytest.approx(0.5, abs=0.02)  # half-way through a 200-step cosine
    assert cont.lr(99) == pytest.approx(0.0)


def test_warmup_steps_bounds():
    assert warmup_steps(100, 0.05) == 5
    assert warmup_steps(10, 0.0) == 1
    assert warmup_steps(1, 0.5) == 0
    with pytest.raises(ValueError):
        Schedule("linear", 1.0, 0.1, 10)
