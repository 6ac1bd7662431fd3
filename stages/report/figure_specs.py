"""What each paper figure draws: the fits, the runs and the metrics it reads, declared once.

The workflow reads it to give a figure's job its inputs (the fit files, each run's metrics.csv) and to refuse a
config that asks for a figure without what it needs; the figures (stages.report.plots) read it for the fits they
draw. Torch- and matplotlib-free: the Snakefile imports it while building the DAG.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.core.kinds import LR_SWEEP
from stages.laws.roles import DEFAULT_FITS, SCRATCH, UPCYCLE

EVERY_FIT = "*"  # in ``fits``: every enabled fit of the study


@dataclass(frozen=True)
class FigureSpec:
    """The inputs of one figure."""

    fits: tuple[str, ...] = ()  # the fits it draws (config["fits"] names, file stems), or (EVERY_FIT,)
    needs_fits: bool = False  # refused without them (else drawn without the law when one is missing)
    runs_of: str = ""  # a run kind it draws alone: refused when that grid section is empty
    metrics: bool = False  # also draws each run's metrics.csv (declared inputs of its job)


FIGURE_SPECS: dict[str, FigureSpec] = {
    "loss_vs_d2": FigureSpec(fits=(DEFAULT_FITS[UPCYCLE],)),
    "alpha_eff": FigureSpec(fits=(DEFAULT_FITS[UPCYCLE],), needs_fits=True),
    "loss_vs_compute": FigureSpec(),
    "sparsity": FigureSpec(fits=("sparsity",)),
    "experts": FigureSpec(),  # loss vs number of experts at equal active parameters, no fit
    "threshold": FigureSpec(fits=(DEFAULT_FITS[UPCYCLE], DEFAULT_FITS[SCRATCH]), needs_fits=True),
    "predicted_vs_observed": FigureSpec(fits=(EVERY_FIT,), needs_fits=True),
    "residuals": FigureSpec(fits=(EVERY_FIT,), needs_fits=True),
    "training_curves": FigureSpec(metrics=True),  # each run's metrics.csv, no fit
    "lr_sweep": FigureSpec(runs_of=LR_SWEEP),  # validation loss vs peak lr of the grid.lr_sweep runs, no fit
}


def figure_fits(figure: str, enabled: list[str]) -> list[str]:
    """The enabled fits (config["fits"] names) that ``figure`` draws."""
    wanted = FIGURE_SPECS[figure].fits
    return list(enabled) if EVERY_FIT in wanted else [name for name in wanted if name in enabled]
