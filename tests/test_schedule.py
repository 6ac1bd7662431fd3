"""Learning-rate schedules end at the run's own budget."""

from __future__ import annotations

import pytest

from stages.training.schedule import Schedule, decay_steps, warmup_steps


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


@pytest.mark.parametrize("shape", ["linear", "1-sqrt", "cosine"])
def test_wsd_warms_up_holds_the_peak_and_decays_to_min(shape):
    s = Schedule("wsd", peak_lr=1.0, min_lr=0.1, total_steps=100, warmup_steps=10, decay_steps=20, decay_shape=shape)
    lrs = [s.lr(i) for i in range(100)]
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[9:80] == [1.0] * 71  # stable phase: exactly the peak
    assert lrs[-1] == pytest.approx(0.1) and all(a > b for a, b in zip(lrs[79:], lrs[80:], strict=False))
    midway = {"linear": 0.5, "1-sqrt": 1 - 0.5**0.5, "cosine": 0.5}[shape]  # share of the peak left half-way
    assert lrs[89] == pytest.approx(0.1 + 0.9 * midway)


def test_wsd_runs_of_different_budgets_share_their_stable_prefix():
    """What lets a grid of budgets branch its cooldowns from one stable run."""
    short = Schedule("wsd", 1.0, 0.0, total_steps=500, warmup_steps=50, decay_steps=decay_steps(500, 50, 0.2))
    long = Schedule("wsd", 1.0, 0.0, total_steps=2000, warmup_steps=50, decay_steps=decay_steps(2000, 50, 0.2))
    assert short.decay_start == 400 and long.decay_start == 1600
    assert [short.lr(i) for i in range(400)] == [long.lr(i) for i in range(400)]
    cosine_short = Schedule("cosine", 1.0, 0.0, total_steps=500, warmup_steps=50)
    cosine_long = Schedule("cosine", 1.0, 0.0, total_steps=2000, warmup_steps=50)
    assert cosine_short.lr(100) < cosine_long.lr(100)  # a cosine's whole shape depends on its budget


def test_fixed_warmup_does_not_depend_on_the_budget():
    assert warmup_steps(390, 0.05, fixed=78) == warmup_steps(1560, 0.05, fixed=78) == 78
    assert warmup_steps(390, 0.05) == 20 and warmup_steps(1560, 0.05) == 78
    assert warmup_steps(50, 0.05, fixed=78) == 49  # never the whole run
    assert decay_steps(100, 10, 0.2) == 20 and decay_steps(100, 95, 0.2) == 5 and decay_steps(3, 0, 0.01) == 1
    with pytest.raises(ValueError):
        Schedule("wsd", 1.0, 0.1, 10, decay_steps=2, decay_shape="exp")
