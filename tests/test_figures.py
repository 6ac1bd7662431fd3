"""What a reviewer reads off the figures: one shading per meaning in threshold, curves per run family without
lines across missing rows, loss_vs_d2's law solid only where each D1 was measured, titles that say a flag once."""

from __future__ import annotations

import math

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
from matplotlib.contour import ContourSet
from matplotlib.patches import Patch

from stages.report.plots.common import style
from stages.report.plots.curves import training_curves
from stages.report.plots.experts import experts, sparsity
from stages.report.plots.interaction import loss_vs_d2
from stages.report.plots.labels import flagged
from stages.report.plots.series import outliers, segments
from stages.report.plots.threshold import REGIONS, first_tie, threshold

UP = {"A": 12.0, "alpha1": 0.1, "alpha2": 0.12, "alpha3": 0.005, "E": 2.5}  # the upcycled law (D1, D2)
SCRATCH = {"A": 5.0, "alpha": 0.3, "B": 200.0, "beta": 0.35, "E": 2.0}  # chinchilla in N1 and D
N1 = 131072.0
FLAGS = "collapsed: E; not identified: A, alpha1"


@pytest.fixture(autouse=True)
def _style() -> None:
    style()


def upcycled_runs(last_d2: dict[float, float]) -> pd.DataFrame:
    """Upcycled runs at D2 = 100K, 200K, ... up to ``last_d2[D1]`` for each D1, losses on the law."""
    rows = []
    for d1, last in last_d2.items():
        d2 = 100e3
        while d2 <= last:
            loss = UP["A"] * d1 ** -UP["alpha1"] * d2 ** (-UP["alpha2"] + UP["alpha3"] * math.log(d1)) + UP["E"]
            rows.append(
                {
                    "run_id": f"moe/s/d1_{int(d1 / 1e3)}K/e8k2/d2_{int(d2 / 1e3)}K",
                    "kind": "upcycled",
                    "model": "s",
                    "N_dense": N1,
                    "N_active": 4 * N1,
                    "D1": d1,
                    "D2": d2,
                    "val_loss": loss,
                }
            )
            d2 *= 2
    return pd.DataFrame(rows)


def fits_for(runs: pd.DataFrame, alpha3: float = UP["alpha3"]) -> dict:
    ranges = {c: [float(runs[c].min()), float(runs[c].max())] for c in ("D1", "D2")}
    bounds = {name: {"bound": "collapsed" if name == "E" else None} for name in UP}
    return {
        "upcycled": {
            "law": "upcycled",
            "params": {**UP, "alpha3": alpha3},
            "where": "kind == 'upcycled'",
            "columns": {"D1": "D1", "D2": "D2", "loss": "val_loss"},
            "ranges": ranges,
            "diagnostics": {"short": FLAGS, "bounds": bounds},
        },
        "scratch_chinchilla": {"law": "chinchilla", "params": SCRATCH},
    }


def fill_colours(ax) -> set[str]:
    """Every fill colour of the plane (filled contours, patches; not the run dots), as hex."""
    out = set()
    for artist in [*[c for c in ax.collections if isinstance(c, ContourSet)], *ax.patches]:
        colours = np.atleast_2d(artist.get_facecolor())
        out |= {matplotlib.colors.to_hex(c) for c in colours if c[3] > 0}
    return out


def legend_patches(fig) -> dict[str, str]:
    """Legend label -> fill colour (hex) of the figure legend's shaded entries."""
    (legend,) = fig.legends
    out = {}
    for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
        if isinstance(handle, Patch) and handle.get_fill():
            out[text.get_text()] = matplotlib.colors.to_hex(handle.get_facecolor())
    return out


def test_threshold_has_one_shading_per_meaning_each_named_in_the_legend():
    runs = upcycled_runs({100e3: 800e3, 200e3: 800e3, 400e3: 800e3})
    fig = threshold(runs, fits_for(runs))
    named = legend_patches(fig)
    for ax in fig.axes:
        drawn = fill_colours(ax) - {"#ffffff"}  # white: the hatched region's background, named below
        assert drawn and drawn <= set(named.values()), (drawn, named)  # every shade has a legend entry
        assert not any(p.get_fill() and p.get_alpha() for p in ax.patches)  # no grey veil over the extrapolation
    assert len(set(named.values())) == len(named)  # and each entry is its own shade: one meaning each
    assert all(any(label.startswith(REGIONS[r]) for label in named) for r in ("upcycle", "scratch"))
    assert not any(label.startswith(REGIONS["undefined"]) for label in named)  # not drawn here, not named


def test_threshold_names_where_the_laws_are_undefined():
    runs = upcycled_runs({100e3: 800e3, 400e3: 800e3})
    fig = threshold(runs, fits_for(runs, alpha3=5.0))  # D2^(5 ln D1) overflows at large D1 and D2
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(label.startswith(REGIONS["undefined"]) for label in legend)
    hatched = [c for ax in fig.axes for c in ax.collections if any(getattr(c, "hatches", None) or [])]
    assert hatched  # drawn, not left white


def test_d2_star_is_the_first_turn_from_upcycling_to_scratch_one_value_per_d1():
    d2 = np.geomspace(1e3, 1e7, 41)
    x = np.log10(d2)
    # per D1: scratch at tiny D2 (the law's D2 -> 0 divergence), upcycling, then scratch above 1e5; never; and
    # upcycling, scratch, upcycling again (a second crossing from the floors)
    gap = np.stack([(x - 3.5) * (x - 5.0), np.ones_like(x), -(x - 4.0) * (x - 6.0)], axis=1)
    star = first_tie(d2, gap)
    assert star[0] == pytest.approx(1e5, rel=1e-6) and math.isnan(star[1]) and star[2] == pytest.approx(1e4, rel=1e-6)
    runs = upcycled_runs({100e3: 800e3, 400e3: 800e3})
    fig = threshold(runs, fits_for(runs))
    for ax in fig.axes:
        ys: dict[float, list[float]] = {}
        for line in ax.get_lines():
            if str(line.get_gid()).startswith("tie:"):
                for xv, yv in zip(line.get_xdata(), line.get_ydata(), strict=True):
                    if np.isfinite(yv):
                        ys.setdefault(float(xv), []).append(float(yv))
        assert all(max(v) - min(v) < 1e-9 * max(v) for v in ys.values())  # never two D2* at one D1: no loop


def test_loss_vs_d2_is_solid_over_each_d1s_runs_and_dashed_from_its_last_d2():
    runs = upcycled_runs({100e3: 1.6e6, 200e3: 800e3, 400e3: 800e3})  # only D1 = 100K reaches 1.6M
    fig = loss_vs_d2(runs, fits_for(runs))
    lines = {str(line.get_gid()): line for line in fig.axes[0].get_lines() if line.get_gid()}
    for d1, group in runs.groupby("D1"):
        first, last = group["D2"].min(), group["D2"].max()
        solid = lines[f"fitted:{d1:g}"]
        assert solid.get_linestyle() == "-"
        assert min(solid.get_xdata()) == pytest.approx(first) and max(solid.get_xdata()) == pytest.approx(last)
        dashed = [line for gid, line in lines.items() if gid == f"extrapolated:{d1:g}"]
        beyond = [line for line in dashed if min(line.get_xdata()) >= last * (1 - 1e-9)]
        assert len(beyond) == 1 and min(beyond[0].get_xdata()) == pytest.approx(last)
        assert all(line.get_linestyle() == "--" for line in dashed)


def test_titles_say_each_flag_once():
    runs = upcycled_runs({100e3: 800e3, 400e3: 800e3})
    title = loss_vs_d2(runs, fits_for(runs)).axes[0].get_title()
    assert title.count("collapsed") == 1 and "not identified: A, alpha1" in title
    fit = fits_for(runs)["upcycled"]
    assert flagged(fit) == f" ({FLAGS})"  # nothing printed beside it: every flag stays
    assert flagged(fit, shown=["E"]) == " (not identified: A, alpha1)"
    assert flagged({"diagnostics": {"short": "collapsed: E"}}, shown=["E"]) == ""


RUNS = [  # run_id, kind, model, moe, D1, D2, D, steps trained
    ("dense/xs/d1_600K", "dense", "xs", "", 600e3, 0, 600e3, 1200),
    ("dense/s/d1_600K", "dense", "s", "", 600e3, 0, 600e3, 1200),
    ("scratch/s/e8k2/d_600K", "scratch_moe", "s", "e8k2", None, None, 600e3, 1200),
    ("moe/s/d1_200K/e8k2/d2_400K", "upcycled", "s", "e8k2", 200e3, 400e3, 400e3, 800),
    ("dense_cont/s/d1_200K/d2_400K", "dense_cont", "s", "", 200e3, 400e3, 400e3, 800),
]
SPIKE_STEP = 1090  # one odd batch of the shared data order, read by every run that gets there


def metrics(
    steps: int, first_step: int = 0, missing: tuple[int, int] | None = None, spike: bool = True
) -> pd.DataFrame:
    """A metrics.csv as training logs it: a row every 10 steps and the last, 500 tokens a step, validation every
    100 steps; ``first_step``: where the run starts in the shared data order; ``missing``: steps never logged;
    ``spike``: whether the batch at ``SPIKE_STEP`` of the data order stands out."""
    rows = []
    rng = np.random.default_rng(steps + first_step)
    for step in [*range(0, steps, 10), steps - 1]:
        if missing and missing[0] <= step < missing[1]:
            continue
        loss = 4.0 + 3.0 / math.sqrt(1 + step / 20) + 0.05 * rng.standard_normal()
        if spike and first_step + step == SPIKE_STEP:
            loss += 1.0
        val = loss - 0.1 if step % 100 == 0 or step == steps - 1 else None
        rows.append({"step": step + 1, "tokens": 500 * (step + 1), "train_loss": loss, "val_loss": val})
    return pd.DataFrame(rows)


def curves_study(
    missing: tuple[int, int] | None = None, spiked: str = ""
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The runs of ``RUNS`` and their metrics; ``spiked``: the one run whose log has the odd batch (all if "")."""
    runs = pd.DataFrame(
        [
            {"run_id": r, "kind": k, "model": m, "moe": e, "D1": d1, "D2": d2, "D": d, "N_active": 1.0}
            for r, k, m, e, d1, d2, d, _ in RUNS
        ]
    )
    curves = {}
    for run_id, _, _, _, d1, _, _, steps in RUNS:
        first = int(d1 / 500) if run_id.startswith(("moe/", "dense_cont/")) else 0
        lost = missing if run_id == "dense/xs/d1_600K" else None
        curves[run_id] = metrics(steps, first, lost, spike=spiked in ("", run_id))
    parent = metrics(400)  # the dense parent at D1 = 200K of the continued runs
    runs = pd.concat(
        [runs, pd.DataFrame([{"run_id": "dense/s/d1_200K", "kind": "dense", "model": "s", "moe": "", "D1": 200e3}])]
    )
    curves["dense/s/d1_200K"] = parent
    return runs.reset_index(drop=True), curves


def test_curves_one_panel_per_family_and_no_line_across_missing_rows():
    runs, curves = curves_study(missing=(300, 600))  # dense xs lost 30 logged rows
    fig = training_curves(runs, {}, curves)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["dense", "MoE from scratch", "upcycled MoE: s e8k2", "dense continued: s"]
    for ax in fig.axes:
        for line in ax.get_lines():
            x = np.asarray(line.get_xdata(), float)
            if len(x) < 2:
                continue
            if line.get_linestyle() in ("None", ""):
                continue  # dots: validation loss where measured
            assert np.diff(x).max() <= 1.5 * 10 * 500 + 1e-6, (ax.get_title(), np.diff(x).max())
    dense = fig.axes[0]
    val = [line for line in dense.get_lines() if line.get_linestyle() == "None" and len(line.get_xdata()) > 1]
    assert val and all(line.get_marker() == "o" for line in val)  # validation: dots, never joined
    assert len(segments(curves["dense/xs/d1_600K"])) == 2 and len(segments(curves["dense/s/d1_600K"])) == 1


def test_a_batch_that_stands_out_in_every_run_is_marked_once_per_panel_that_reads_it():
    runs, curves = curves_study()
    x = 500 * (SPIKE_STEP + 1)
    assert outliers(curves["dense/s/d1_600K"]).tolist() == [x]
    fig = training_curves(runs, {}, curves)
    for ax in fig.axes[:4]:
        marks = [line for line in ax.get_lines() if line.get_marker() == "v"]
        assert [m.get_xdata()[0] for m in marks] == [x], ax.get_title()  # upcycled: D1 + its own tokens
        assert any(t.get_text() == "batch at 546K" for t in ax.texts)
    assert any("shared data order" in t.get_text() for t in fig.legends[0].get_texts())
    runs, curves = curves_study(spiked="dense/xs/d1_600K")
    fig = training_curves(runs, {}, curves)  # one lineage's outlier: noise, not the shared data
    assert not [line for ax in fig.axes for line in ax.get_lines() if line.get_marker() == "v"]


def sparsity_sweeps() -> pd.DataFrame:
    """Upcycled top-1 sweeps over E of two sizes at D2 = 800K, and of s again at 4x the tokens."""
    rows = []
    for model, n, d2 in (("xs", 60e3, 799744.0), ("s", 100e3, 799744.0), ("s", 100e3, 3198976.0)):
        rows.append({"kind": "dense_cont", "model": model, "D1": 399872.0, "D2": d2, "val_loss": 4.3})
        for count in (2, 4, 8):
            rows.append(
                {
                    "kind": "upcycled",
                    "model": model,
                    "moe": f"e{count}k1",
                    "experts": count,
                    "top_k": 1,
                    "granularity": 1,
                    "sparsity": 1 + 0.9 * (count - 1),
                    "N_active": n,
                    "D1": 399872.0,
                    "D2": d2,
                    "val_loss": 4.4 + 0.01 * count - (0.1 if d2 > 1e6 else 0.0),
                }
            )
    return pd.DataFrame(rows)


def test_sparsity_draws_the_budget_its_law_was_fitted_on_and_names_the_other():
    runs = sparsity_sweeps()
    fit = {
        "law": "sparsity_no_interaction",
        "params": {"d1": 1.0, "a": 0.01, "b": 0.05, "d3": 1.0},
        "where": "kind == 'upcycled' and granularity == 1 and D2 < 2e6",
        "diagnostics": {"short": "", "bounds": {}},
    }
    ax = sparsity(runs, {"sparsity": fit}).axes[0]
    drawn = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    assert len(drawn) == 6 and drawn.min() > 4.4  # the 3.2M sweep (0.1 lower) is left out
    assert "not drawn: the runs at D1 400K D2 3.2M" in " ".join(ax.get_title().split())
    assert len(np.concatenate([c.get_offsets() for c in sparsity(runs, {}).axes[0].collections])) == 9


def test_experts_tells_the_budgets_of_one_size_apart():
    runs = sparsity_sweeps()
    scratch = runs[(runs["kind"] == "upcycled") & (runs["model"] == "s") & (runs["D2"] < 1e6)]
    runs = pd.concat([runs, scratch.assign(kind="scratch_moe", D=1.6e6, D1=0.0, D2=0.0)])  # no xs from scratch
    fig = experts(runs, {})
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["s, top-1"]
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "s, top-1, D1 400K D2 3.2M" in labels and "s, top-1, D1 400K D2 800K" in labels
    handles = ax.get_legend().legend_handles
    colours = {label: matplotlib.colors.to_hex(h.get_color()) for label, h in zip(labels, handles, strict=True)}
    assert colours["s, top-1, D1 400K D2 3.2M"] != colours["s, top-1, D1 400K D2 800K"]
