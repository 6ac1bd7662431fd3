"""Runs table, fit table and provenance tracer on real (small) runs: the reporting half outside the slow tier."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, write_corpus

SHAPE = json.dumps({"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64})
TRAIN = json.dumps({"seq_len": 32, "batch_size": 8, "log_every": 4})


def stage(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    if check:
        assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A dense run, its continuation and an upcycled child, each evaluated, collected into runs.csv."""
    root = tmp_path_factory.mktemp("study")
    corpus = write_corpus(root / "data")
    common = ["--data", str(corpus), "--train", TRAIN, "--seed", "1", "--data-seed", "2"]
    stage(
        "stages.train",
        "--kind",
        "dense",
        "--run-id",
        "dense/t/d1_4K",
        "--tokens",
        "4096",
        "--model",
        SHAPE,
        "--out",
        str(root / "dense"),
        *common,
    )
    stage(
        "stages.train",
        "--kind",
        "dense_cont",
        "--run-id",
        "dense_cont/t/d1_4K/d2_2K",
        "--tokens",
        "2048",
        "--init",
        str(root / "dense"),
        "--out",
        str(root / "cont"),
        *common,
    )
    stage(
        "stages.upcycle",
        "--dense",
        str(root / "dense"),
        "--data",
        str(corpus),
        "--seed",
        "3",
        "--eval-tokens",
        "512",
        "--moe",
        '{"experts": 4, "top_k": 2, "norm_topk_prob": true}',
        "--recipe",
        '{"method": "drop", "drop_ratio": 0.5, "drop_per_matrix_indices": true}',
        "--out",
        str(root / "init"),
    )
    stage(
        "stages.train",
        "--kind",
        "upcycled",
        "--run-id",
        "moe/t/d1_4K/e4k2/d2_2K",
        "--tokens",
        "2048",
        "--init",
        str(root / "init"),
        "--out",
        str(root / "moe"),
        *common,
    )
    evals = []
    for run in ("dense", "cont", "moe"):
        evals.append(str(root / "eval" / run / "eval.json"))
        stage(
            "stages.evaluate",
            "--checkpoint",
            str(root / run),
            "--tokens",
            str(corpus / "val.bin"),
            "--max-tokens",
            "1024",
            "--out",
            evals[-1],
        )
    stage("stages.collect", "--evals", *evals, "--out", str(root / "runs.csv"))
    return root


def test_runs_table_counts_tokens_and_sunk_compute_from_the_lineage(study):
    runs = pd.read_csv(study / "runs.csv").set_index("kind")
    assert list(pd.read_parquet(study / "runs.parquet").columns) == list(pd.read_csv(study / "runs.csv").columns)
    dense, cont, moe = runs.loc["dense"], runs.loc["dense_cont"], runs.loc["upcycled"]
    assert (dense["D1"], dense["D2"], dense["D"]) == (4096, 0, 4096)
    assert (cont["D1"], cont["D2"], cont["D_total"]) == (4096, 2048, 6144)
    assert (moe["D1"], moe["D2"], moe["experts"], moe["top_k"]) == (4096, 2048, 4, 2)
    assert dense["flops_total"] == dense["flops_run"]
    assert moe["flops_total"] == pytest.approx(dense["flops_run"] + moe["flops_run"])  # sunk dense cost, once
    assert moe["N_dense"] == dense["N_total"] and moe["N_active"] > dense["N_active"]
    assert moe["sparsity"] == pytest.approx(moe["N_total"] / moe["N_active"]) and moe["sparsity"] > 1
    assert (moe["method"], moe["drop_ratio"], moe["drop_indices"]) == ("drop", 0.5, "per_matrix")
    assert np.isfinite(moe["step0_val_loss"]) and moe["step0_val_loss"] > moe["parent_val_loss"]  # drop perturbs
    assert (cont["schedule"], moe["seq_len"], moe["batch_size"]) == ("cosine", 32, 8)
    assert moe["router_health"].split(" (")[0] in ("balanced", "collapsed", "dead experts")
    assert pd.isna(dense["router_health"]) and pd.isna(cont["router_health"])  # empty for dense runs


def test_provenance_check_passes_then_catches_tampering(study, tmp_path):
    for run in ("dense", "moe"):
        res = stage("stages.provenance", str(study / run), "--check", check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "MISMATCH" not in res.stdout
    assert "<- dense/t/d1_4K" in res.stdout  # the upcycled run's chain names its dense ancestor
    weights = study / "dense" / "model.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        res = stage("stages.provenance", str(study / "moe"), "--check", check=False)
        assert res.returncode == 2 and "MISMATCH" in res.stdout
        assert res.stderr.splitlines() == [res.stderr.strip()] and res.stderr.startswith(f"error: {weights}: MISMATCH")
        res = stage("stages.provenance", str(study / "moe"), check=False)  # without --check: reported, exit 0
        assert res.returncode == 0 and "MISMATCH" in res.stdout
    finally:
        weights.write_bytes(original)


def test_fit_table_from_fits_of_public_data(tmp_path):
    public = pd.read_csv(REPO / "tests" / "data" / "chinchilla_epoch_extracted.csv")
    public["D"] = public["Training FLOP"] / (6 * public["Model Size"])
    table = tmp_path / "chinchilla.csv"
    public.to_csv(table, index=False)
    fits = []
    for name, extra in (("full", []), ("heldout", ["--holdout", "N > 5e9"])):
        fits.append(tmp_path / f"{name}.json")
        stage(
            "stages.fit",
            "--table",
            str(table),
            "--law",
            "chinchilla",
            "--grid",
            "40",
            "--map",
            "N=Model Size",
            *extra,
            "--out",
            str(fits[-1]),
        )
    stage("stages.tables", "--fits", *map(str, fits), "--out", str(tmp_path / "params"))
    out = pd.read_csv(tmp_path / "params.csv")
    assert list(out["fit"]) == ["full", "heldout"] and (out["law"] == "chinchilla").all()
    assert out.loc[1, "n_points"] < out.loc[0, "n_points"] and np.isfinite(out.loc[1, "holdout_rmse_log"])
    assert np.isnan(out.loc[0, "holdout_rmse_log"])
    markdown = (tmp_path / "params.md").read_text()
    lines = markdown.splitlines()
    assert [line.split(" | ")[0] for line in lines[:1] + lines[2:]] == ["| fit", "| full", "| heldout"]
    assert set(lines[1]) == {"|", "-"} and lines[1].count("|") == lines[0].count("|")
    bad = stage("stages.tables", "--fits", str(table), "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_every_routing_and_recipe_option_has_a_runs_table_column():
    from stages.core.options import option_fields
    from stages.model.config import MoEConfig
    from stages.report.runs_table import COLUMNS, OPTION_COLUMNS
    from stages.surgery.recipe import UpcycleRecipe

    renamed = {"layers": "moe_layers", "drop_per_matrix_indices": "drop_indices"}
    for group in (MoEConfig, UpcycleRecipe):
        for f in option_fields(group):
            assert renamed.get(f.name, f.name) in COLUMNS + OPTION_COLUMNS, f.name


# --- figures: what a reviewer reads off them -------------------------------------------------------------------

STEP = 512  # tokens per optimizer step: a run trains whole steps, so "16K" in its path trains 15872 tokens
SIZES = {"xs": 73_968, "s": 131_392, "m": 295_392}  # N_dense of the demo's shapes
MOE_RATIO = 1.756  # N_active / N_dense of e8k2
UP = {"A": 400.0, "E": 1.2376357953686816e-35, "alpha1": 0.3727, "alpha2": 0.2749, "alpha3": 0.017}
SCRATCH = {"A": 20.0, "E": 1.5, "alpha": 0.2, "B": 40.0, "beta": 0.28}
DENSE = {"A": 22.0, "E": 0.0, "alpha": 0.2, "B": 45.0, "beta": 0.28}


def _trained(label: str) -> int:
    from stages.core.cli import parse_tokens

    return parse_tokens(label) // STEP * STEP


def _figure_runs() -> pd.DataFrame:
    """A demo-like runs table: budgets labelled as in the paths, counts as trained, one replicated cell."""
    from stages.laws.forms import predict

    def chinchilla(params: dict, n: float, d: float) -> float:
        return float(predict("chinchilla", params, pd.DataFrame({"N": [n], "D": [d]}))[0])

    rows = []
    d1s, d2s = ("16K", "32K", "64K"), ("8K", "16K", "32K")
    for model, n in SIZES.items():
        for d1 in d1s:
            rows.append(
                dict(
                    run_id=f"dense/{model}/d1_{d1}",
                    kind="dense",
                    model=model,
                    moe="",
                    D1=_trained(d1),
                    D2=0,
                    D=_trained(d1),
                    N_dense=n,
                    N_active=n,
                    val_loss=chinchilla(DENSE, n, _trained(d1)),
                )
            )
    for model in ("xs", "s"):
        n = SIZES[model]
        for d in d1s:
            rows.append(
                dict(
                    run_id=f"scratch/{model}/e8k2/d_{d}",
                    kind="scratch_moe",
                    model=model,
                    moe="e8k2",
                    D1=0,
                    D2=0,
                    D=_trained(d),
                    N_dense=n,
                    N_active=MOE_RATIO * n,
                    val_loss=chinchilla(SCRATCH, n, _trained(d)),
                )
            )
    n = SIZES["s"]
    for d1 in d1s:
        for d2 in d2s:
            frame = pd.DataFrame({"D1": [_trained(d1)], "D2": [_trained(d2)]})
            rows.append(
                dict(
                    run_id=f"moe/s/d1_{d1}/e8k2/d2_{d2}",
                    kind="upcycled",
                    model="s",
                    moe="e8k2",
                    D1=_trained(d1),
                    D2=_trained(d2),
                    D=_trained(d2),
                    N_dense=n,
                    N_active=MOE_RATIO * n,
                    val_loss=float(predict("upcycled", UP, frame)[0]),
                )
            )
    for d1 in ("16K", "64K"):
        for d2 in d2s:
            loss = chinchilla(DENSE, n, _trained(d1) + _trained(d2))
            rows.append(
                dict(
                    run_id=f"dense_cont/s/d1_{d1}/d2_{d2}",
                    kind="dense_cont",
                    model="s",
                    moe="",
                    D1=_trained(d1),
                    D2=_trained(d2),
                    D=_trained(d2),
                    N_dense=n,
                    N_active=n,
                    val_loss=loss,
                )
            )
    for parametrization in ("sp", "mup"):  # grid.lr_sweep: the best lr moves with width under sp only
        for width in (64, 128, 256):
            best = 0.01 * (64 / width if parametrization == "sp" else 1.0)
            for lr in (0.001, 0.003, 0.01, 0.03):
                rows.append(
                    dict(
                        run_id=f"lr_sweep/w{width}_{parametrization}/lr_{lr!r}/d_64K",
                        kind="lr_sweep",
                        model=f"w{width}_{parametrization}",
                        moe="",
                        D1=_trained("64K"),
                        D2=0,
                        D=_trained("64K"),
                        N_dense=12 * width**2,
                        N_active=12 * width**2,
                        d_model=width,
                        peak_lr=lr,
                        parametrization=parametrization,
                        val_loss=4.0 - 0.3 * np.log2(width / 64) + 0.2 * np.log10(lr / best) ** 2,
                    )
                )
    runs = pd.DataFrame(rows)
    runs["replica"] = 1
    replica = runs[runs["run_id"].isin(["dense/s/d1_32K", "moe/s/d1_32K/e8k2/d2_32K"])].copy()
    replica["run_id"] = replica["run_id"].str.replace("/s/", "/s@2/")
    replica["replica"], replica["val_loss"] = 2, replica["val_loss"] * 1.01
    runs = pd.concat([runs, replica], ignore_index=True)
    sunk = np.where(runs["kind"].isin(["upcycled", "dense_cont"]), 6 * runs["N_dense"] * runs["D1"], 0.0)
    # x20 puts the totals where the demo's are (2e11 to 2.6e12 FLOPs), a range on which matplotlib's labelled
    # minor ticks collided ("3x10^11" over "4x10^11")
    runs["flops_total"] = 20 * (sunk + 6 * runs["N_active"] * runs["D"])
    runs["sparsity"] = np.where(runs["moe"] == "", 1.0, 4.0)
    moe = runs["moe"] != ""
    runs["experts"], runs["top_k"], runs["granularity"] = np.where(moe, 8, 0), np.where(moe, 2, 0), np.where(moe, 1, 0)
    return runs


def _figure_fits(runs: pd.DataFrame) -> dict:
    """Hand-written fit JSONs with the blocks the figures read: a collapsed floor, ranges, slopes, resamples."""
    up = runs[runs["kind"] == "upcycled"]
    rng = np.random.default_rng(0)
    samples = [{k: v * (1 + 0.02 * rng.standard_normal()) for k, v in UP.items()} for _ in range(20)]
    ranges = {c: [float(up[c].min()), float(up[c].max())] for c in ("D1", "D2")}
    bounds = {name: {"bound": None} for name in UP} | {"E": {"bound": "collapsed", "role": "floor"}}
    per_d1 = [
        {"D1": float(d1), "slope_log_excess": -UP["alpha2"] + UP["alpha3"] * np.log(d1), "slope_log_excess_se": 0.01}
        for d1 in sorted(up["D1"].unique())
    ]
    chinchilla = {"law": "chinchilla", "columns": {"N": "N_dense", "D": "D", "loss": "val_loss"}}
    return {
        "upcycled": {
            "law": "upcycled",
            "params": UP,
            "where": "kind == 'upcycled'",
            "ranges": ranges,
            "columns": {"D1": "D1", "D2": "D2", "loss": "val_loss"},
            "bootstrap": {"samples": samples},
            "statsmodels": {"per_D1": per_d1},
            "diagnostics": {"short": "collapsed: E; not identified: A, alpha1, alpha2, alpha3", "bounds": bounds},
        },
        "scratch_chinchilla": {**chinchilla, "params": SCRATCH, "where": "kind == 'scratch_moe'"},
        "dense_chinchilla": {**chinchilla, "params": DENSE, "where": "kind == 'dense'"},
    }


def _figure_curves(runs: pd.DataFrame) -> dict:
    return {
        run.run_id: pd.DataFrame(
            {
                "tokens": np.arange(1, 9) * run.D / 8,
                "train_loss": 8 - np.arange(8) * 0.4,
                "val_loss": 8.1 - np.arange(8) * 0.4,
            }
        )
        for run in runs.itertuples()
    }


@pytest.fixture(scope="module")
def drawn() -> dict:
    """Every registered figure drawn once from the demo-like inputs (Agg, the study's style)."""
    from stages.report.plots.common import style
    from stages.report.plots.registry import FIGURES

    style()
    runs = _figure_runs()
    fits, curves = _figure_fits(runs), _figure_curves(runs)
    figures = {
        name: draw(runs, fits, curves=curves) if name == "training_curves" else draw(runs, fits)
        for name, draw in FIGURES.items()
    }
    for fig in figures.values():
        fig.canvas.draw()
    return {"runs": runs, "fits": fits, "curves": curves, **figures}


def _legend_texts(fig) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def test_collapsed_floor_reads_as_zero_not_as_noise(drawn):
    from stages.report.plots.labels import format_params

    title = drawn["loss_vs_d2"].axes[0].get_title()
    assert "E≈0 (collapsed)" in title and "e-35" not in title and "e-" not in title.split("\n")[0]
    fit = drawn["fits"]["upcycled"]
    old = {k: v for k, v in fit.items() if k != "diagnostics"}  # fitted before diagnostics: value decides
    assert "E≈0" in format_params(old) and "e-35" not in format_params(old)
    big = {"law": "upcycled", "params": {**UP, "A": 4.7e164}, "diagnostics": {"bounds": {"A": {"bound": "> 1e12"}}}}
    assert r"A=$4.7\times10^{164}$ (at bound: > 1e12)" in format_params(big)


def test_legends_spell_budgets_as_the_paths_do(drawn):
    assert _legend_texts(drawn["loss_vs_d2"])[:3] == ["D1 = 16K", "D1 = 32K", "D1 = 64K"]
    curves = drawn["training_curves"]
    texts = [t.get_text() for ax in curves.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert texts[-2:] == ["D1 = 16K", "D1 = 64K"] and not any("15.9K" in t for t in texts)  # dense continued
    assert texts[-5:-2] == ["D1 = 16K", "D1 = 32K", "D1 = 64K"]  # upcycled, in order
    assert not any("15.9K" in t or "31.7K" in t for t in _legend_texts(drawn["loss_vs_compute"]))


def test_loss_vs_compute_one_colour_and_one_legend_entry_per_d1(drawn):
    import matplotlib.colors

    fig = drawn["loss_vs_compute"]
    texts = _legend_texts(fig)
    for kind, d1s in (("upcycled MoE (s, e8k2)", ("16K", "32K", "64K")), ("dense continued (s)", ("16K", "64K"))):
        for d1 in d1s:
            assert texts.count(f"{kind}, D1 = {d1}") == 1, texts
    assert len(texts) == len(set(texts))
    ax = fig.axes[0]
    up_lines = [line for line in ax.get_lines() if line.get_marker() == "^" and len(line.get_xdata()) > 1]
    colours = {matplotlib.colors.to_hex(line.get_color()) for line in up_lines}
    assert len(up_lines) == 3 and len(colours) == 3  # one line and one colour per D1
    grey = [np.dot(matplotlib.colors.to_rgb(c), [0.299, 0.587, 0.114]) for c in sorted(colours)]
    assert len(set(np.round(grey, 3))) == 3  # a sequential palette: the shades differ in lightness


def _overlapping_ticks(fig) -> list[tuple[str, str]]:
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            boxes = []
            for minor in (False, True):
                locs = axis.get_minorticklocs() if minor else axis.get_majorticklocs()
                labels = axis.get_ticklabels(minor=minor)
                for loc, label in zip(locs, labels, strict=False):
                    if lo <= loc <= hi and label.get_visible() and label.get_text():
                        boxes.append((label.get_text(), label.get_window_extent(renderer)))
            for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
                if box_a.overlaps(box_b):
                    out.append((a, b))
    return out


def test_no_tick_labels_overlap_and_every_text_fits_the_figure(drawn):
    from matplotlib.text import Text

    from stages.report.plots.compute import loss_vs_compute
    from stages.report.plots.registry import FIGURES

    runs = drawn["runs"]
    narrow = loss_vs_compute(runs[runs["kind"].isin(["upcycled", "dense_cont"])], {})  # FLOPs within a decade
    narrow.canvas.draw()
    for name, fig in [(name, drawn[name]) for name in FIGURES] + [("loss_vs_compute, one decade", narrow)]:
        assert _overlapping_ticks(fig) == [], name
        renderer, frame = fig.canvas.get_renderer(), fig.bbox
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        ticks = {id(t) for ax in fig.axes for t in ax.get_xticklabels(which="both") + ax.get_yticklabels(which="both")}
        for text in texts:
            if id(text) in ticks:
                continue  # tick labels beyond the view are never drawn; the overlap check covers the rest
            box = text.get_window_extent(renderer)
            assert box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1, (name, text.get_text())
            assert box.y0 >= frame.y0 - 1 and box.y1 <= frame.y1 + 1, (name, text.get_text())


def test_threshold_marks_what_is_extrapolated(drawn):
    from stages.report.plots.threshold import SHOWN_EXTRAPOLATION

    fig, fit = drawn["threshold"], drawn["fits"]["upcycled"]
    (d1_lo, d1_hi), (d2_lo, d2_hi) = fit["ranges"]["D1"], fit["ranges"]["D2"]
    for ax in fig.axes[:2]:
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        assert x0 >= d1_lo / SHOWN_EXTRAPOLATION / 1.01 and x1 <= d1_hi * SHOWN_EXTRAPOLATION * 1.01
        assert y0 >= d2_lo / SHOWN_EXTRAPOLATION / 1.01 and y1 <= d2_hi * SHOWN_EXTRAPOLATION * 1.01
        for line in ax.get_lines():  # D2*: solid only inside the fitted box, dashed only outside it
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            shown = np.isfinite(y)
            inside = (x >= d1_lo) & (x <= d1_hi) & (y >= d2_lo * 0.999) & (y <= d2_hi * 1.001)
            if str(line.get_gid()).endswith(":fitted"):
                assert line.get_linestyle() == "-" and inside[shown].all()
            elif str(line.get_gid()).endswith(":extrapolated"):
                assert line.get_linestyle() == "--" and not inside[shown].all()
    assert any("extrapolated" in t for t in _legend_texts(fig))


def test_every_figure_saves_byte_identical_png_and_pdf(drawn, tmp_path):
    from stages.report.plots.common import save
    from stages.report.plots.registry import FIGURES

    runs, fits, curves = drawn["runs"], drawn["fits"], drawn["curves"]
    for name, draw in FIGURES.items():
        blobs = []
        for i in range(2):
            fig = draw(runs, fits, curves=curves) if name == "training_curves" else draw(runs, fits)
            save(fig, tmp_path / f"{name}{i}", {"figure": name})
            blobs.append([(tmp_path / f"{name}{i}.{ext}").read_bytes() for ext in ("png", "pdf")])
        assert blobs[0] == blobs[1], name


def test_budget_labels_and_log_ticks():
    from stages.report.plots.common import log_ticks
    from stages.report.plots.labels import budget_labels, count_label

    rows = pd.DataFrame({"run_id": ["moe/s/d1_16K/e8k2/d2_8K", "dense/s/d1_oops"], "D1": [15872, 30000.0]})
    assert budget_labels(rows, "D1") == {15872.0: "16K", 30000.0: "30K"}  # an unreadable label: the count
    assert budget_labels(rows.drop(columns="run_id"), "D1") == {15872.0: "15.9K", 30000.0: "30K"}  # any CSV
    assert [count_label(v) for v in (999_900, 1.5e6, 250, 2e9)] == ["1M", "1.5M", "250", "2B"]
    for lo, hi in ((6e4, 6e5), (59e3, 164e3), (2e11, 2.6e12), (2e4, 8e6), (2e5, 2.5e5)):
        ticks = log_ticks(lo, hi)
        assert len(ticks) >= 3 and lo <= ticks[0] and ticks[-1] <= hi, (lo, hi, ticks)
        assert min(np.diff(np.log10(ticks))) >= np.log10(hi / lo) / 6  # never crowded
    assert log_ticks(1e3, 1e22) == [1e3, 1e6, 1e9, 1e12, 1e15, 1e18, 1e21]  # every third decade


def test_citation_file_names_the_project_and_every_paper_it_implements():
    import yaml

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["authors"]
    assert cff["license"] == "Apache-2.0"
    arxiv = {ref["url"].rsplit("/", 1)[-1] for ref in cff["references"]}
    assert arxiv == {"2502.03009", "2410.07524", "2212.05055", "2502.19261", "2411.07340", "2405.18392", "2409.12903"}
    assert all(ref["title"] and ref["authors"] and ref["year"] for ref in cff["references"])


def test_experts_figure_draws_he_et_al_view_and_keeps_fine_grained_out_of_the_sparsity_curves():
    """Loss vs E at equal active parameters: one line per model (coarse), fine-grained apart, dense as a level."""
    import matplotlib.pyplot as plt

    from stages.report.plots.common import style
    from stages.report.plots.experts import experts, sparsity

    style()
    rows = []
    for seed, shift in ((1, 0.0), (2, 0.02)):
        for name, e, k, g, p, loss in (
            ("e2k1", 2, 1, 1, 1.6, 4.10),
            ("e4k1", 4, 1, 1, 2.2, 4.05),
            ("e8k1", 8, 1, 1, 3.4, 4.03),
            ("e8k2g2", 8, 2, 2, 2.2, 4.00),
        ):
            rows.append(
                dict(
                    kind="upcycled",
                    model="s",
                    moe=name,
                    experts=e,
                    top_k=k,
                    granularity=g,
                    sparsity=p,
                    N_active=2e5,
                    D1=4e5,
                    D2=8e5,
                    D=8e5,
                    val_loss=loss + shift,
                    replica=seed,
                )
            )
        rows.append(
            dict(
                kind="dense_cont",
                model="s",
                moe="",
                experts=0,
                top_k=0,
                granularity=0,
                sparsity=1.0,
                N_active=2e5,
                D1=4e5,
                D2=8e5,
                D=8e5,
                val_loss=4.2 + shift,
                replica=seed,
            )
        )
    runs = pd.DataFrame(rows)
    fig = experts(runs, {})
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["s, top-1", "s, G = 2, top-2"]
    coarse = ax.get_lines()[0]
    assert list(coarse.get_xdata()) == [2, 4, 8]
    assert list(coarse.get_ydata()) == pytest.approx([4.11, 4.06, 4.04])  # means over the two seeds
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == pytest.approx(4.21) for line in ax.get_lines())
    plt.close(fig)
    fig = sparsity(runs, {})
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)
    assert texts[-1].startswith("e8k2g2: G = 2") and "not fitted" in texts[-1]
    assert not any("e8k2g2" in t for t in texts[:-1])  # P = 2.2 is e4k1 alone among the curves
