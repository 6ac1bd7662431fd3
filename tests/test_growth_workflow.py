"""Growth in the workflow: config validation, the grid's grown runs and paths, the ledger, the runs table, the
planner's grow option, the findings row, the figure, and a tiny real DAG run through grow -> grown -> evaluate."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_snakemake

from stages.core.cli import UserError, parse_tokens
from stages.model.compute import flops_per_token, param_counts
from stages.report import claims as F
from stages.workflow.accounting import ledger_lines, load_config, merge
from stages.workflow.config import load_yaml, model_config, validate_config
from stages.workflow.grid import Grid

DEFAULT = load_yaml(REPO / "config" / "config.yaml")
WARMSTART = merge(DEFAULT, load_yaml(REPO / "config" / "warmstart.yaml"))


def with_change(path: str, value, base=WARMSTART) -> dict:
    cfg = copy.deepcopy(base)
    node = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return cfg


# ----- the grid -------------------------------------------------------------------------------------------------


def test_warmstart_grid_has_the_grown_runs_their_parents_inits_and_baseline():
    grid = Grid(load_config([REPO / "config" / "warmstart.yaml"]))
    grown = grid.of_kind("grown")
    assert len(grown) == 4 * 2 * 4  # 4 variants (hypercloning, shrink-perturb, zero-pad, copy) x 2 D1 x 4 D2
    ids = {r.run_id for r in grid.runs}
    assert "grown/s/d1_100K/w2_hc/d2_200K" in ids and "grown/s/d1_400K/w2_sp/d2_800K" in ids
    assert {"dense/s/d1_100K", "dense/s/d1_400K"} <= ids  # the parents join the grid
    assert {f"dense/l/d1_{d}" for d in ("100K", "200K", "400K", "800K", "1.2M")} <= ids  # l from scratch
    run = grid.run("grown", "s", d1="100K", d2="200K", growth="w2_hc")
    assert run.directory == "results/warmstart/grown/s/d1_100K/w2_hc/d2_200K"
    assert run.eval_json == "results/warmstart/eval/grown/s/d1_100K/w2_hc/d2_200K/eval.json"
    assert run.labels() == {"kind": "grown", "model": "s", "growth": "w2_hc", "D1": "100K", "D2": "200K"}
    assert grid.init_dir(run) == "results/warmstart/grow/s/d1_100K/w2_hc"
    assert grid.grow_inits() == [
        f"results/warmstart/grow/s/d1_{d}/{g}" for d in ("100K", "400K") for g in ("w2_copy", "w2_hc", "w2_sp", "w2_zp")
    ]
    assert grid.lr_policy(run) == "wsd" and run.family == "grown/s/d1_100K/w2_hc"
    # wsd: the four budgets of a family share one stable run, which starts from the grown initialisation
    segments = [s for s in grid.segments.values() if s.family == run.family]
    assert len(segments) == 4 and grid.start_state(run) == [grid.branch_state(run.family, grid.branch_step(run))]
    first = min(segments, key=lambda s: s.step)
    args = grid.segment_args(first.family, first.step)
    assert "--kind grown" in args and "--init results/warmstart/grow/s/d1_100K/w2_hc" in args
    # the grown model's full shape (stages.grow --model) and recipe
    shape = json.loads(grid.growth_model_json("w2_hc"))
    assert (shape["d_model"], shape["n_head"], shape["d_ff"], shape["vocab_size"]) == (128, 4, 512, 2048)
    assert json.loads(grid.growth_recipe_json("w2_sp"))["method"] == "shrink_perturb"
    assert grid.seed("grown", "s", "w2_hc") != grid.seed("grown", "s", "w2_sp")


def test_a_replicated_grown_run_replicates_its_whole_lineage():
    cfg = with_change("grid.replicas", {"runs": ["grown/s/d1_400K/w2_hc/d2_200K"]})
    grid = Grid(validate_config(cfg))
    ids = {r.run_id for r in grid.runs}
    assert {"grown/s@2/d1_400K/w2_hc/d2_200K", "dense/s@2/d1_400K"} <= ids
    replica = grid.run("grown", "s@2", d1="400K", d2="200K", growth="w2_hc")
    assert replica.labels()["replica"] == "2" and replica.labels()["model"] == "s"
    assert grid.init_dir(replica) == "results/warmstart/grow/s@2/d1_400K/w2_hc"
    assert "results/warmstart/grow/s@2/d1_400K/w2_hc" in grid.grow_inits()
    assert grid.seed("grown", "s@2", "w2_hc") != grid.seed("grown", "s", "w2_hc")


def test_grown_section_takes_a_list_of_blocks():
    blocks = [
        {"models": ["s"], "growth": ["w2_hc"], "d1": ["100K"], "d2": ["100K", "200K"]},
        {"models": ["s"], "growth": ["w2_sp"], "d1": ["400K"], "d2": ["800K"]},
    ]
    grid = Grid(validate_config(with_change("grid.grown", blocks)))
    assert {r.run_id for r in grid.of_kind("grown")} == {
        "grown/s/d1_100K/w2_hc/d2_100K",
        "grown/s/d1_100K/w2_hc/d2_200K",
        "grown/s/d1_400K/w2_sp/d2_800K",
    }


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("growth.w2_hc.target", "zz", "config key 'growth.w2_hc.target': 'zz' is not defined under 'models'"),
        ("growth.w2_hc.method", "magic", "config key 'growth.w2_hc.method'"),
        ("growth.w2_hc.unknown", 1, "config key 'growth.w2_hc.unknown': unknown key"),
        ("growth.w2_hc.shrink", 0.3, "config key 'growth.w2_hc': grow.shrink: only used by method 'shrink_perturb'"),
        ("growth.w2_sp.noise_std", 0.1, "config key 'growth.w2_sp': grow.noise_std: only used by method"),
        ("growth.w2_hc.target", "m", "config key 'growth.w2_hc.target': 'm' cannot be grown from 's' (model.d_model"),
        ("growth.w2_hc.target", "xs", "is smaller than the parent's"),
        ("growth.w2_hc.lr_policy", "continue", "config key 'growth.w2_hc.lr_policy': 'continue' resumes"),
        ("growth.w2_x", {"method": "hypercloning"}, "'target' is a required property"),
        ("grid.grown.growth", ["nope"], "config key 'grid.grown.growth': 'nope' is not defined under 'growth'"),
        ("grid.grown.models", ["zz"], "config key 'grid.grown.models': 'zz' is not defined under 'models'"),
        ("grid.grown.d2", ["10"], "config key 'grid.grown.d2': '10' is less than one optimizer step"),
        ("grid.grown.d1", ["100K", "100000"], "duplicate token budget"),
        ("study", "grow", "config key 'study'"),
    ],
)
def test_bad_growth_config_is_one_line_naming_the_key(path, value, message):
    with pytest.raises(UserError) as info:
        validate_config(with_change(path, value))
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_a_target_with_other_heads_is_refused_naming_the_key():
    cfg = with_change("models.l2", {"n_layer": 2, "d_model": 128, "n_head": 2, "d_ff": 512})
    with pytest.raises(UserError, match=r"^config key 'growth.w2_hc.target': 'l2' cannot be grown .*model.n_head"):
        validate_config(with_change("growth.w2_hc.target", "l2", base=cfg))


def test_planner_grow_option_needs_an_enabled_fit_and_the_grown_model():
    base = merge(DEFAULT, {"growth": {"w2": {"target": "l"}}})
    cfg = validate_config(
        with_change("planner.grown_fit", "upcycled", base=with_change("planner.grown_model", "l", base))
    )
    n_grown = param_counts(model_config(cfg, "l")).total()
    assert f"--grown-fit upcycled --n-grown {n_grown}" in Grid(cfg).planner_args()
    assert "--grown-fit" not in Grid(validate_config(base)).planner_args()
    for change, key in (
        ({"grown_fit": "nope", "grown_model": "l"}, "grown_fit"),
        ({"grown_fit": "upcycled"}, "grown_model"),
    ):
        with pytest.raises(UserError, match=rf"^config key 'planner.{key}'"):
            validate_config(merge(base, {"planner": change}))


def test_ledger_counts_grown_runs_at_the_grown_size_and_the_growth_checks():
    cfg = load_config([REPO / "config" / "warmstart.yaml"])
    lines = ledger_lines(cfg)
    fpt = flops_per_token(model_config(cfg, "l"), cfg["train"]["seq_len"], cfg["train"]["flops_convention"])
    grown = [x for x in lines if x.kind == "grown"]
    assert len(grown) == 32 and all(x.flops == pytest.approx(fpt * x.tokens) for x in grown)
    assert len([x for x in lines if x.kind == "grow_eval"]) == 8


# ----- the planner, the findings row and the figure --------------------------------------------------------------

UP = {"A": 20.0, "alpha1": 0.05, "alpha2": 0.1, "alpha3": 0.001, "E": 1.0}
GROWN = {"A": 30.0, "alpha1": 0.05, "alpha2": 0.12, "alpha3": 0.001, "E": 0.9}


def _fits(tmp_path, grown_law: str = "upcycled"):
    for name, law, params in (("upcycled", "upcycled", UP), ("grown", grown_law, GROWN)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"law": law, "params": params}))
    return tmp_path


def test_planner_grow_row_reads_the_grown_law_and_counts_the_sunk_cost(tmp_path):
    from stages.laws.fitted import Laws
    from stages.laws.forms import predict
    from stages.laws.outcomes import Budget
    from stages.laws.planner import plan

    laws = Laws.read(_fits(tmp_path), {"upcycle": "upcycled", "grow": "grown"})
    n1, na, ng, d1 = 1e6, 2e6, 4e6, 1e8
    t = plan(laws, n1, na, d1, Budget(1e8, "tokens"), None, 100.0, n_grown=ng)[0].set_index("option")
    expected = float(predict("upcycled", GROWN, pd.DataFrame({"D1": [d1], "D2": [1e8]}))[0])
    assert t.loc["grow", "predicted_loss"] == pytest.approx(expected) and t.loc["grow", "within_budget"] == "yes"
    assert t.loc["grow", ["flops_extra", "flops_total"]].tolist() == pytest.approx(
        [6 * ng * 1e8, 6 * (n1 * d1 + ng * 1e8)]
    )
    c = 1e16  # a FLOP budget: the grown model trains C / (6 N_grown) tokens
    t = plan(laws, n1, na, d1, Budget(c, "flops"), None, 100.0, n_grown=ng)[0].set_index("option")
    assert t.loc["grow", "tokens_this_phase"] == pytest.approx(c / (6 * ng))
    assert "grow" not in plan(laws, n1, na, d1, 1e8, None, 100.0)[0]["option"].tolist()  # no size: no option
    with pytest.raises(UserError, match="not an upcycled"):
        Laws.read(_fits(tmp_path, "chinchilla"), {"upcycle": "upcycled", "grow": "grown"})


def test_planner_cli_grow_option_and_its_flags(tmp_path):
    _fits(tmp_path)
    cmd = [sys.executable, "-m", "stages.planner", "--fits", str(tmp_path), "--n1", "1e6", "--n-active", "2e6"]
    cmd += ["--d1", "1e8", "--extra-tokens", "1e8"]
    res = subprocess.run([*cmd, "--grown-fit", "grown", "--n-grown", "4e6"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^\s*grow\s+yes\s", res.stdout, re.M) and "verdict: grow, lowest predicted loss" in res.stdout
    bad = subprocess.run([*cmd, "--grown-fit", "grown"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "--n-grown" in bad.stderr and "Traceback" not in bad.stderr


def _grown_table(gain: float, trend: float) -> pd.DataFrame:
    """Dense l from scratch (L = 2 + 30 C^-0.1) and grown runs whose loss is below it at equal flops_total by
    ``gain`` (plus ``trend`` x their D2 / N)."""
    rows = []
    n_l, n_s = 8e5, 2e5
    for d in (1e5, 2e5, 4e5, 8e5, 1.6e6):
        c = 6 * n_l * d
        rows.append(dict(run_id=f"dense/l/d1_{d:g}", kind="dense", model="l", D=d, D1=d, D2=0.0, N_total=n_l))
        rows[-1].update(flops_total=c, val_loss=2 + 30 * c**-0.1)
    for d1 in (1e5, 4e5):
        for d2 in (1e5, 2e5, 4e5, 8e5):
            c = 6 * (n_s * d1 + n_l * d2)
            loss = 2 + 30 * c**-0.1 - gain + trend * d2 / n_l
            rows.append(dict(run_id=f"grown/s/d1_{d1:g}/w2/d2_{d2:g}", kind="grown", model="s", growth="w2"))
            rows[-1].update(D=d2, D1=d1, D2=d2, N_total=n_l, flops_total=c, val_loss=loss)
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("gain", "trend", "verdict"),
    [(0.05, 0.02, F.REPRODUCED), (0.05, -0.02, F.NOT_AT_SCALE), (-0.05, 0.0, F.CONTRADICTED)],
)
def test_grown_row_compares_with_the_larger_dense_model_at_equal_compute(gain, trend, verdict):
    runs = _grown_table(gain, trend)
    row = F.grown_row(F.cell_means(runs), F.seed_noise(runs))
    assert row.finding == "grown_vs_dense_scratch" and row.verdict == verdict, row
    assert "Mallik" in row.source and "L_grown - L_dense_scratch" in row.measured
    none = F.grown_row(F.cell_means(runs[runs["kind"] == "grown"]), F.seed_noise(runs))
    assert none.verdict == F.NOT_MEASURED


def test_grown_row_judges_the_best_variant_and_leaves_ablations_to_their_own_row():
    good = _grown_table(0.05, 0.02)
    bad = good[good["kind"] == "grown"].assign(growth="zp", val_loss=lambda t: t["val_loss"] + 0.2)
    bad["run_id"] = bad["run_id"].str.replace("/w2/", "/zp/")
    runs = pd.concat([good, bad], ignore_index=True)
    row = F.grown_row(F.cell_means(runs), F.seed_noise(runs))
    assert row.verdict == F.REPRODUCED and row.measured.startswith("w2:"), row
    assert "; w2 8/8 (-0.0" in row.evidence and "zp 0/8 (+0.1" in row.evidence


def _ablation_table(sp: float, zp: float, copy: float) -> pd.DataFrame:
    rows = []
    for name, shrink, perturb, loss in (("sp", 0.5, 1.0, sp), ("zp", 1.0, 0.0, zp), ("copy", 1.0, 1.0, copy)):
        for d2 in (1e5, 4e5):
            rows.append(dict(run_id=f"grown/s/d1_1e5/{name}/d2_{d2:g}", kind="grown", model="s", growth=name))
            rows[-1].update(method="shrink_perturb", growth_shrink=shrink, growth_perturb=perturb, N_total=8e5)
            rows[-1].update(D1=1e5, D2=d2, D=d2, val_loss=loss - 0.1 * (d2 > 1e5), replica=1)
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("sp", "zp", "copy", "verdict"),
    [(4.0, 4.3, 4.1, F.REPRODUCED), (4.0, 4.3, 3.9, F.NOT_AT_SCALE), (4.5, 4.3, 4.1, F.CONTRADICTED)],
)
def test_shrink_perturb_row_against_plain_zero_pad_and_copy(sp, zp, copy, verdict):
    runs = _ablation_table(sp, zp, copy)
    row = F.shrink_perturb_row(F.cell_means(runs), F.seed_noise(runs))
    assert row.finding == "shrink_perturb" and row.verdict == verdict, row
    assert "vs zero_pad: lower in" in row.measured and "vs copy: lower in" in row.measured
    hc = runs.assign(method="hypercloning")
    assert F.shrink_perturb_row(F.cell_means(hc), F.seed_noise(hc)).verdict == F.NOT_MEASURED


def test_loss_vs_compute_draws_grown_runs_next_to_the_dense_baseline():
    from stages.report.plots.compute import loss_vs_compute

    runs = _grown_table(0.05, 0.0).assign(moe="", N_active=lambda t: t["N_total"], replica=1)
    runs["run_id"] = runs["run_id"].str.replace("d1_100000", "d1_100K").str.replace("d1_400000", "d1_400K")
    fig = loss_vs_compute(runs, {})
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "grown dense (s, w2), D1 = 100K" in texts and "grown dense (s, w2), D1 = 400K" in texts
    assert "dense (l)" in texts
    grown_lines = [line for line in fig.axes[0].get_lines() if line.get_marker() == "v"]
    assert len(grown_lines) == 2


# ----- a tiny real DAG run: grow -> grown (wsd) -> evaluate -> collect ---------------------------------------------

TINY = """
study: gw
data: {corpus: tiny, sources: [shakespeare], vocab_size: 512}
models:
  xs: {n_layer: 1, d_model: 32, n_head: 2, d_ff: 64}
  xs_w2: {n_layer: 1, d_model: 64, n_head: 4, d_ff: 128}
growth:
  hc: {target: xs_w2, method: hypercloning, noise_std: 0.3, lr_policy: wsd}
train: {seq_len: 64, batch_size: 8, lr_policy: cosine, dense_cont_lr_policy: cosine, warmup_steps: 4,
        save_every: 0, eval_every: 0}
grid:
  dense: {models: [xs_w2], d1: [16K, 32K]}
  upcycled: null
  scratch_moe: null
  dense_cont: null
  grown: {models: [xs], growth: [hc], d1: [16K], d2: [8K, 16K]}
  replicas: {seeds: 2, runs: [grown/xs/d1_16K/hc/d2_16K]}
evaluate: {max_tokens: 8192}
upcycle_eval_tokens: 4096
fits: {dense_chinchilla: null, dense_heldout: null, scratch_chinchilla: null, upcycled: null, upcycled_heldout: null,
       upcycled_no_interaction: null, upcycled_additive: null}
figures: [loss_vs_compute]
planner: null
"""


@pytest.mark.slow
def test_tiny_grown_grid_end_to_end(repo_copy, tmp_path):
    config = tmp_path / "grown.yaml"
    config.write_text(TINY)
    run_snakemake(repo_copy, tmp_path, "--configfile", str(config), "--cores", "2")
    results = tmp_path / "results" / "gw"
    runs = pd.read_csv(results / "tables" / "runs.csv")
    grown = runs[runs["kind"] == "grown"].set_index("run_id")
    assert set(grown.index) == {
        "grown/xs/d1_16K/hc/d2_8K",
        "grown/xs/d1_16K/hc/d2_16K",
        "grown/xs@2/d1_16K/hc/d2_16K",
    }
    parent = runs.set_index("run_id").loc["dense/xs/d1_16K"]
    target = runs[runs["run_id"] == "dense/xs_w2/d1_16K"].iloc[0]
    for run_id, row in grown.iterrows():
        trained = parse_tokens(run_id.rsplit("d2_", 1)[1]) // 512 * 512  # whole steps of 8 x 64 tokens
        assert row["D1"] == parent["D"] == 15872 and row["D2"] == row["D"] == trained
        assert row["N_total"] == target["N_total"] and row["N_dense"] == parent["N_total"] < row["N_total"]
        assert row["flops_total"] == pytest.approx(row["flops_run"] + parent["flops_run"])  # the parent's sunk cost
        assert row["growth"] == "hc" and row["method"] == "hypercloning" and row["growth_noise_std"] == 0.3
        assert row["step0_val_loss"] == pytest.approx(row["parent_val_loss"], abs=1e-4)  # function preserving
        assert math.isfinite(row["val_loss"]) and row["val_loss"] < row["step0_val_loss"]
    assert grown.loc["grown/xs@2/d1_16K/hc/d2_16K", "replica"] == 2
    assert (results / "stable" / "grown" / "xs" / "d1_16K" / "hc").is_dir()  # wsd: the family's stable run
    surgery = json.loads((results / "grow" / "xs" / "d1_16K" / "hc" / "surgery.json").read_text())
    assert surgery["function_preserving"] and surgery["factors"]["d_model"] == 2.0
    findings = pd.read_csv(results / "tables" / "findings.csv").set_index("finding")
    assert "grown_vs_dense_scratch" in findings.index
    assert (results / "figures" / "loss_vs_compute.png").stat().st_size > 1000
    dry = run_snakemake(repo_copy, tmp_path, "--configfile", str(config), "-n")
    assert "Nothing to be done" in dry.stdout


def test_loss_at_equal_compute_is_interpolated_in_log_space():
    """The findings row interpolates log loss in log FLOPs between the two nearest dense runs."""
    runs = _grown_table(0.0, 0.0)
    cells = F.cell_means(runs)
    row = F.grown_row(cells, F.seed_noise(runs))
    # L = 2 + 30 C^-0.1 is not linear in log-log: interpolation lies above the curve, so gaps are <= 0 but tiny
    parts = row.evidence.split("; ")  # what the pairs share, their replication, the summary, then each pair
    assert any(p.startswith("w2 ") and "/8 (" in p for p in parts)  # per variant: pairs below the band, mean gap
    gaps = [float(x.split(": ")[1]) for x in parts if " D1 " in x]
    assert gaps  # the first pairs are listed
    assert all(-0.01 < g <= 1e-12 for g in gaps) and np.isfinite(gaps).all()


def test_every_growth_option_is_in_the_schema_with_its_default():
    import dataclasses

    from stages.core.options import option_fields
    from stages.surgery.growth_recipe import GrowthRecipe
    from stages.workflow.schema import config_schema
    from stages.workflow.sections import VariantTraining

    section = config_schema()["$defs"]["growth"]
    fields = [f for group in (GrowthRecipe, VariantTraining) for f in option_fields(group)]
    assert set(section["properties"]) == {f.name for f in fields} | {"target"} and section["required"] == ["target"]
    for f in fields:
        assert f.default is not dataclasses.MISSING and section["properties"][f.name]["default"] == f.default
