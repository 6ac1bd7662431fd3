"""Paper figures from the runs table and the fitted laws (seaborn), saved as PNG and PDF with deterministic bytes.

Each figure is a function ``name(runs, fits) -> Figure`` registered in :mod:`.registry`'s ``FIGURES``; ``fits``
maps a fit's name (its file stem, e.g. ``upcycled``, ``scratch_chinchilla``) to its JSON, and which fits a figure
draws is declared in stages.report.figure_specs (the workflow reads the same declaration). A figure whose fit is
missing raises :class:`.common.MissingFit`; :func:`.common.message_figure` draws the reason instead.
:func:`.common.save` writes ``<prefix>.png`` and ``<prefix>.pdf`` without timestamps or software tags, each
carrying a provenance record (report.lineage reads it back). Bands are 95% intervals over the fit's bootstrap
resamples. A figure that draws a fit whose diagnostics flag it (stages.laws.diagnostics) says so in its title:
"(collapsed: E; not identified: A, B)". Run kinds are named and marked as stages.core.kinds says.

Conventions every figure keeps, so that a reader can compare them (:mod:`.labels`): token budgets in legends are
spelled as the run directories spell them (``d1_16K`` -> "D1 = 16K", ``budget_labels``); count axes read 100K,
1M; FLOPs axes read 2x10^11; fitted parameters print with their diagnosis (a collapsed floor as "E≈0
(collapsed)", ``format_params``); a law drawn beyond the data it was fitted on is dashed and says "extrapolated".

Modules: ``labels`` (how numbers and fits are written), ``common`` (style, axes, fit rows and bands, saving),
``series`` (a logged loss series: gaps, smoothing, outlier batches), one module per figure or small group of
figures, and ``registry`` (name -> figure).
"""

import matplotlib

matplotlib.use("Agg")  # before any submodule imports pyplot: figures are files, never windows
