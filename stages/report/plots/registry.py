"""Every figure by its name (the names of stages.report.figure_specs, which says what each draws)."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt

from stages.report.figure_specs import FIGURE_SPECS
from stages.report.plots.compute import loss_vs_compute
from stages.report.plots.curves import training_curves
from stages.report.plots.experts import experts, sparsity
from stages.report.plots.fit_checks import predicted_vs_observed, residuals
from stages.report.plots.interaction import alpha_eff, loss_vs_d2
from stages.report.plots.lr_sweep import lr_sweep
from stages.report.plots.threshold import threshold

FIGURES: dict[str, Callable[..., plt.Figure]] = {
    figure.__name__: figure
    for figure in (
        loss_vs_d2,
        alpha_eff,
        loss_vs_compute,
        sparsity,
        experts,
        threshold,
        predicted_vs_observed,
        residuals,
        training_curves,
        lr_sweep,
    )
}
assert list(FIGURES) == list(FIGURE_SPECS), "every figure is declared in stages.report.figure_specs, in order"
