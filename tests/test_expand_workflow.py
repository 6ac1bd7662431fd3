"""Expert expansion in the workflow: config validation, the grid's expanded runs, parents and paths, the ledger, the
planner's expand option, the findings rows, the figure, and a tiny real DAG run through expand -> expanded."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, run_snakemake

from stages.core.cli import UserError
from stages.model.compute import flops_per_token
from stages.report import claims as F
from stages.workflow.accounting import ledger_lines, load_config, merge
from stages.workflow.config import expanded_moe_config, load_yaml, model_config, validate_config
from stages.workflow.grid import Grid

DEFAULT = load_yaml(REPO / "config" / "config.yaml")
STUDY = merge(DEFAULT, load_yaml(REPO / "config" / "expert_upcycling.yaml"))


def with_change(path: str, value, base=STUDY) -> dict:
    cfg = copy.deepcopy(base)
    node = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return cfg


# ----- the grid -------------------------------------------------------------------------------------------------


def test_expert_upcycling_grid_has_the_expanded_runs_their_parents_and_baselines():
    grid = Grid(load_config([REPO / "config" / "expert_upcycling.yaml"]))
    expanded = grid.of_kind("expanded")
    assert len(expanded) == 2 * 2 * 3 + 2 * 3 + 2  # x2 at 2 D1, x4 at one, 3 D2 each; 2 replicas
    ids = {r.run_id for r in grid.runs}
    assert "expanded/xs/e4k2/d1_200K/x2u/d2_100K" in ids and "expanded/xs/e4k2/d1_400K/x2g/d2_400K" in ids
    assert {"scratch/xs/e4k2/d_200K", "scratch/xs/e4k2/d_400K", "scratch/xs@2/e4k2/d_200K"} <= ids  # parents
    assert {"scratch/xs/e8k2/d_800K", "scratch/xs/e16k2/d_600K", "moe/xs/d1_200K/e16k2/d2_400K"} <= ids
    run = grid.run("expanded", "xs", moe="e4k2", d1="200K", d2="100K", expansion="x2g")
    assert run.directory == "results/expert_upcycling/expanded/xs/e4k2/d1_200K/x2g/d2_100K"
    assert run.labels() == {
        "kind": "expanded",
        "model": "xs",
        "moe": "e4k2",
        "expansion": "x2g",
        "D1": "200K",
        "D2": "100K",
    }
    assert grid.init_dir(run) == "results/expert_upcycling/expand/xs/e4k2/d1_200K/x2g"
    assert grid.parent_dir(run) == "results/expert_upcycling/scratch/xs/e4k2/d_200K"
    assert len(grid.expand_inits()) == 4 + 2 + 2  # (x2u, x2g) x 2 D1, (x4u, x4g) x 1 D1, 2 replicas
    assert grid.lr_policy(run) == "wsd" and run.variant == "x2g" and run.identity == "e4k2/x2g"
    assert grid.run_seed(run) != grid.run_seed(
        grid.run("expanded", "xs", "e4k2", d1="200K", d2="100K", expansion="x2u")
    )
    # wsd: the three D2 of a family share one stable run, which starts from the expanded initialisation
    segments = [s for s in grid.segments.values() if s.family == run.family]
    assert len(segments) == 3
    args = grid.segment_args(run.family, min(s.step for s in segments))
    assert "--kind expanded" in args and "--init results/expert_upcycling/expand/xs/e4k2/d1_200K/x2g" in args
    trained = grid.trained_model(run)
    assert (trained.moe.experts, trained.moe.top_k, trained.moe.router_bias) == (8, 2, True)
    x4 = grid.trained_model(grid.run("expanded", "xs", "e4k2", d1="200K", d2="100K", expansion="x4u"))
    assert (x4.moe.experts, x4.moe.router_bias) == (16, False)
    assert json.loads(grid.expansion_recipe_json("x2g"))["selection"] == "utility"


def test_expanded_section_rules_and_a_replica_replicate_the_parent_moe():
    cfg = with_change("grid.replicas", {"runs": ["expanded/xs/e4k2/d1_400K/x2u/d2_200K"]})
    grid = Grid(validate_config(cfg))
    ids = {r.run_id for r in grid.runs}
    assert {"expanded/xs@2/e4k2/d1_400K/x2u/d2_200K", "scratch/xs@2/e4k2/d_400K"} <= ids
    replica = grid.run("expanded", "xs@2", "e4k2", d1="400K", d2="200K", expansion="x2u")
    assert grid.init_dir(replica) == "results/expert_upcycling/expand/xs@2/e4k2/d1_400K/x2u"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("grid.expanded", {"models": ["xs"], "moe": ["e4k2"], "d1": ["200K"], "expansion": ["nope"], "d2": ["100K"]},
         "config key 'grid.expanded.expansion': 'nope' is not defined under 'expansion'"),
        ("expansion.x2u.utility_batches", 4, "config key 'expansion.x2u': expand.utility_batches: only used by"),
        ("expansion.x2u.factor", 1, "config key 'expansion.x2u.factor'"),
        ("expansion.x2u.selection", "magic", "config key 'expansion.x2u.selection'"),
        ("expansion.x2u.lr_policy", "continue", "config key 'expansion.x2u.lr_policy': 'continue' resumes"),
        ("planner.expanded_fit", "nope", "config key 'planner.expanded_fit': 'nope' is not an enabled fit"),
        ("study", "expanded", "config key 'study'"),
        ("study", "expand", "config key 'study'"),
    ],
)  # fmt: skip
def test_bad_expansion_config_is_one_line_naming_the_key(path, value, message):
    with pytest.raises(UserError) as info:
        validate_config(with_change(path, value))
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_the_nanotron_backend_refuses_a_router_bias_naming_the_expansion():
    cfg = with_change("grid.expanded", {"models": ["xs"], "moe": ["e4k2"], "d1": ["200K"], "expansion": ["x2g"],
                                        "d2": ["100K"]})  # fmt: skip
    cfg = with_change("train.backend", "nanotron", base=cfg)
    for name in ("e4k2", "e8k2", "e16k2"):
        cfg["moe"][name]["norm_topk_prob"] = False  # nanotron's own MoE does not renormalise
    with pytest.raises(UserError, match=r"^config key 'expansion.x2g' \(grid.expanded, model 'xs'\): moe.router_bias"):
        validate_config(cfg)


def test_ledger_counts_expanded_runs_at_the_expanded_size_and_the_expansion_checks():
    cfg = load_config([REPO / "config" / "expert_upcycling.yaml"])
    lines = ledger_lines(cfg)
    t = cfg["train"]
    shape = model_config(cfg, "xs")
    for expansion, experts in (("x2g", 8), ("x4u", 16)):
        moe = expanded_moe_config(cfg, "e4k2", expansion)
        assert moe.experts == experts
    fpt8 = flops_per_token(model_config(cfg, "xs", "e8k2"), t["seq_len"], t["flops_convention"])
    expanded = [x for x in lines if x.kind == "expanded" and "/x2u/" in x.job]
    assert expanded and all(x.flops == pytest.approx(fpt8 * x.tokens) for x in expanded)  # the e8k2 shape, no bias
    checks = {x.job.rsplit("/", 1)[1]: x for x in lines if x.kind == "expand_eval"}
    assert len([x for x in lines if x.kind == "expand_eval"]) == 8
    utility = 8 * 8 * t["seq_len"]  # the x2g recipe: 8 batches of 8 sequences, forward and backward
    assert checks["x2g"].tokens == checks["x2u"].tokens + utility
    assert shape.moe is None  # the grid model is dense; its MoE variants and expansions are routing groups


# ----- the planner, the findings rows and the figure --------------------------------------------------------------

UP = {"A": 20.0, "alpha1": 0.05, "alpha2": 0.1, "alpha3": 0.001, "E": 1.0}
EXPANDED = {"A": 25.0, "alpha1": 0.06, "alpha2": 0.11, "alpha3": 0.001, "E": 0.9}


def _fits(tmp_path, law: str = "upcycled"):
    for name, kind, params in (("upcycled", "upcycled", UP), ("expanded", law, EXPANDED)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"law": kind, "params": params}))
    return tmp_path


def test_planner_expand_row_reads_the_expanded_law_and_counts_the_moe_phase(tmp_path):
    from stages.laws.fitted import Laws
    from stages.laws.forms import predict
    from stages.laws.outcomes import Budget
    from stages.laws.planner import plan

    laws = Laws.read(_fits(tmp_path), {"upcycle": "upcycled", "expand": "expanded"})
    n1, na, d1 = 1e6, 2e6, 1e8
    t = plan(laws, n1, na, d1, Budget(1e8, "tokens"), None, 100.0)[0].set_index("option")
    expected = float(predict("upcycled", EXPANDED, pd.DataFrame({"D1": [d1], "D2": [1e8]}))[0])
    assert t.loc["expand", "predicted_loss"] == pytest.approx(expected) and t.loc["expand", "within_budget"] == "yes"
    assert t.loc["expand", ["flops_extra", "flops_total"]].tolist() == pytest.approx([6 * na * 1e8, 6 * na * 2e8])
    assert t.loc["expand", "extrapolated"] in ("unknown", "no")
    c = 1e16  # a FLOP budget: the expanded MoE (same active size) trains C / (6 N_active) tokens
    t = plan(laws, n1, na, d1, Budget(c, "flops"), None, 100.0)[0].set_index("option")
    assert t.loc["expand", "tokens_this_phase"] == pytest.approx(c / (6 * na))
    no_fit = Laws.read(_fits(tmp_path), {"upcycle": "upcycled", "expand": "missing"})
    rows = plan(no_fit, n1, na, d1, 1e8, None, 100.0)[0].set_index("option")
    assert rows.loc["expand", "kind"] == "unavailable"
    with pytest.raises(UserError, match="not an upcycled"):
        Laws.read(_fits(tmp_path, "chinchilla"), {"upcycle": "upcycled", "expand": "expanded"})


def test_planner_expand_row_is_flagged_outside_the_fitted_range(tmp_path):
    from stages.laws.fitted import Laws
    from stages.laws.planner import plan

    _fits(tmp_path)
    fit = json.loads((tmp_path / "expanded.json").read_text())
    fit["ranges"] = {"D1": [1e5, 4e5], "D2": [1e5, 4e5]}
    (tmp_path / "expanded.json").write_text(json.dumps(fit))
    laws = Laws.read(tmp_path, {"upcycle": "upcycled", "expand": "expanded"})
    t = plan(laws, 1e6, 2e6, 2e5, 8e5, None, 100.0)[0].set_index("option")
    assert t.loc["expand", "extrapolated"] == "yes" and t.loc["expand", "extrapolation"] == pytest.approx(2.0)
    with pytest.raises(UserError, match="expand: D2"):
        plan(laws, 1e6, 2e6, 2e5, 1e8, None, 100.0)


def test_planner_cli_expanded_fit_flag_and_the_workflow_passes_it(tmp_path):
    _fits(tmp_path)
    cmd = [sys.executable, "-m", "stages.planner", "--fits", str(tmp_path), "--n1", "1e6", "--n-active", "2e6"]
    cmd += ["--d1", "1e8", "--extra-tokens", "1e8", "--expanded-fit", "expanded"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^\s*expand\s+yes\s", res.stdout, re.M)
    grid = Grid(load_config([REPO / "config" / "expert_upcycling.yaml"]))
    assert grid.planner_args().endswith("--expanded-fit expanded")


def _expanded_table(gain: float, utility_gain: float) -> pd.DataFrame:
    """e4k2 and e8k2 from scratch (L = 2 + 30 C^-0.1, e8k2 lower by 0.05) and e4k2 -> e8k2 expansions whose loss is
    below e8k2 from scratch at equal flops_total by ``gain`` (uniform) and ``gain + utility_gain`` (utility, at the
    shortest D2 only), each cell with two seeds 0.002 apart."""
    rows = []
    n = 1e5

    def add(run_id: str, **kw) -> None:
        for k, shift in ((1, 0.0), (2, 0.002)):
            rid = run_id.replace("/xs/", f"/xs@{k}/") if k > 1 else run_id
            row = dict(run_id=rid, model="xs", top_k=2, granularity=1, replica=k, **kw)
            row["val_loss"] = kw["val_loss"] + shift
            rows.append(row)

    for moe, experts, offset in (("e4k2", 4, 0.0), ("e8k2", 8, -0.05)):
        for d in (2e5, 3e5, 4e5, 6e5, 8e5):
            c = 6 * n * d
            add(f"scratch/xs/{moe}/d_{d:g}", kind="scratch_moe", moe=moe, experts=experts, D=d, D1=0.0, D2=0.0,
                flops_total=c, val_loss=2 + 30 * c**-0.1 + offset, method="scratch")  # fmt: skip
    for d1 in (2e5, 4e5):
        for d2 in (1e5, 2e5, 4e5):
            c = 6 * n * (d1 + d2)
            for method, name in (("uniform", "x2u"), ("utility", "x2g")):
                extra = utility_gain if method == "utility" and d2 == 1e5 else 0.0
                add(f"expanded/xs/e4k2/d1_{d1:g}/{name}/d2_{d2:g}", kind="expanded", moe="e4k2", experts=8,
                    expansion=name, expansion_factor=2, method=method, D=d2, D1=d1, D2=d2, flops_total=c,
                    val_loss=2 + 30 * c**-0.1 - 0.05 - gain - extra)  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("gain", "verdict"), [(0.05, F.REPRODUCED), (0.0, F.REPRODUCED), (-0.01, F.NOT_AT_SCALE), (-0.05, F.CONTRADICTED)]
)
def test_expansion_row_compares_with_the_fixed_size_moe_at_equal_compute(gain, verdict):
    runs = _expanded_table(gain, 0.0)
    if gain == -0.01:  # one pair worse, the rest within the band
        runs.loc[(runs["kind"] == "expanded") & (runs["D2"] < 2e5), "val_loss"] += 0.01
        runs.loc[(runs["kind"] == "expanded") & (runs["D2"] >= 2e5), "val_loss"] -= 0.01
    row = F.expansion_row(F.cell_means(runs), F.seed_noise(runs))
    assert row.finding == "expand_vs_fixed_moe" and row.verdict == verdict, row
    assert "Dwivedi" in row.source and "L_expanded - L_scratch" in row.measured
    assert "FLOPs per token are equal" in row.evidence
    none = F.expansion_row(F.cell_means(runs[runs["kind"] == "expanded"]), F.seed_noise(runs))
    assert none.verdict == F.NOT_MEASURED


def test_expansion_row_reports_the_compute_at_which_scratch_reaches_the_expanded_loss():
    runs = _expanded_table(0.0, 0.0)
    row = F.expansion_row(F.cell_means(runs), F.seed_noise(runs))
    ratio = float(re.search(r"reaches its loss: median ([0-9.]+)", row.measured)[1])
    assert 0.9 < ratio < 1.01  # on the curve: the same compute, up to log-log interpolation


@pytest.mark.parametrize(
    ("utility_gain", "verdict"), [(0.03, F.REPRODUCED), (0.0, F.NOT_AT_SCALE), (-0.03, F.CONTRADICTED)]
)
def test_selection_row_compares_utility_with_uniform_at_short_d2(utility_gain, verdict):
    runs = _expanded_table(0.0, utility_gain)
    row = F.expansion_selection_row(F.cell_means(runs), F.seed_noise(runs))
    assert row.finding == "expand_utility_vs_uniform" and row.verdict == verdict, row
    assert row.measured.startswith("D2 <= 100K: L_utility - L_uniform mean")
    closures = re.search(r"gap closure utility ([+-][0-9.]+) vs uniform ([+-][0-9.]+)", row.measured)
    assert closures and float(closures[1]) - float(closures[2]) == pytest.approx(utility_gain / 0.05, abs=0.05)
    uniform_only = runs[runs["method"] != "utility"]
    assert F.expansion_selection_row(F.cell_means(uniform_only), F.seed_noise(runs)).verdict == F.NOT_MEASURED


def test_monotone_row_checks_expanded_runs_along_d2_within_one_expansion():
    runs = _expanded_table(0.0, 0.0)
    runs.loc[runs["run_id"].str.contains("x2g/d2_400000"), "val_loss"] += 1.0
    row = F.monotone_row(F.cell_means(runs), F.seed_noise(runs))
    assert row.verdict == F.CONTRADICTED and "expanded" in row.evidence and "D2 400000" in row.evidence


def test_loss_vs_compute_names_expanded_lines_by_moe_and_expansion():
    from stages.report.plots.compute import loss_vs_compute

    runs = _expanded_table(0.0, 0.0).assign(N_active=1e5)
    runs = runs[runs["replica"] == 1]
    runs["run_id"] = runs["run_id"].str.replace("d1_200000", "d1_200K").str.replace("d1_400000", "d1_400K")
    fig = loss_vs_compute(runs, {})
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "expanded MoE (xs, e4k2 x2u), D1 = 200K" in texts and "expanded MoE (xs, e4k2 x2g), D1 = 400K" in texts
    assert "MoE from scratch (xs, e8k2)" in texts
    assert len([line for line in fig.axes[0].get_lines() if line.get_marker() == "P"]) == 4


def test_every_expansion_option_is_in_the_schema_with_its_default():
    import dataclasses

    from stages.core.options import option_fields
    from stages.surgery.expansion_recipe import ExpansionRecipe
    from stages.workflow.schema import config_schema
    from stages.workflow.sections import VariantTraining

    section = config_schema()["$defs"]["expansion"]
    fields = [f for group in (ExpansionRecipe, VariantTraining) for f in option_fields(group)]
    assert set(section["properties"]) == {f.name for f in fields}
    for f in fields:
        assert f.default is not dataclasses.MISSING and section["properties"][f.name]["default"] == f.default


# ----- a tiny real DAG run: scratch -> expand -> expanded (wsd) -> evaluate -> collect -> findings ----------------

TINY = """
study: ew
data: {corpus: tiny, sources: [shakespeare], vocab_size: 512}
models:
  xs: {n_layer: 1, d_model: 32, n_head: 2, d_ff: 64}
moe:
  e2k1: {experts: 2, top_k: 1, method: naive, lr_policy: wsd}
  e4k1: {experts: 4, top_k: 1, method: naive, lr_policy: wsd}
expansion:
  u: {factor: 2, selection: uniform, lr_policy: wsd}
  g: {factor: 2, selection: utility, utility_batches: 2, utility_batch_size: 4, noise_std: 0.05, lr_policy: wsd}
train: {seq_len: 64, batch_size: 8, lr_policy: wsd, dense_cont_lr_policy: wsd, warmup_steps: 4, save_every: 0,
        eval_every: 0}
grid:
  dense: null
  upcycled: null
  dense_cont: null
  scratch_moe: {models: [xs], moe: [e2k1, e4k1], d: [16K, 24K, 32K]}
  expanded: {models: [xs], moe: [e2k1], d1: [16K], expansion: [u, g], d2: [8K, 16K]}
  replicas: {seeds: 2, runs: [expanded/xs/e2k1/d1_16K/g/d2_8K]}
evaluate: {max_tokens: 8192}
upcycle_eval_tokens: 4096
fits: {dense_chinchilla: null, dense_heldout: null, scratch_chinchilla: null, upcycled: null, upcycled_heldout: null,
       upcycled_no_interaction: null, upcycled_additive: null}
figures: [loss_vs_compute, training_curves]
planner: null
"""


@pytest.mark.slow
def test_tiny_expanded_grid_end_to_end(repo_copy, tmp_path):
    config = tmp_path / "expanded.yaml"
    config.write_text(TINY)
    run_snakemake(repo_copy, tmp_path, "--configfile", str(config), "--cores", "2")
    results = tmp_path / "results" / "ew"
    runs = pd.read_csv(results / "tables" / "runs.csv")
    expanded = runs[runs["kind"] == "expanded"].set_index("run_id")
    assert len(expanded) == 5 and expanded.loc["expanded/xs@2/e2k1/d1_16K/g/d2_8K", "replica"] == 2
    table = runs.set_index("run_id")
    parent = table.loc["scratch/xs/e2k1/d_16K"]
    for run_id, row in expanded.iterrows():
        if "@2" in run_id:
            continue
        assert row["D1"] == parent["D"] == 15872 and row["D2"] == row["D"] and row["experts"] == 4
        assert row["flops_total"] == pytest.approx(row["flops_run"] + parent["flops_run"])  # the parent's compute
        assert row["method"] == ("utility" if "/g/" in run_id else "uniform") and row["expansion_factor"] == 2
        assert row["router_bias"] == ("/g/" in run_id)  # uneven copies need the offsets in a bias
        assert row["step0_val_loss"] > 0 and row["parent_val_loss"] > 0  # on upcycle_eval_tokens, not eval's
        assert math.isfinite(row["val_loss"]) and row["val_loss"] < row["step0_val_loss"]
    assert (results / "stable" / "expanded" / "xs" / "e2k1" / "d1_16K" / "g").is_dir()  # wsd: one stable run
    surgery = json.loads((results / "expand" / "xs" / "e2k1" / "d1_16K" / "g" / "surgery.json").read_text())
    assert surgery["experts"] == [2, 4] and surgery["mass_max_abs_diff"] < 1e-6
    findings = pd.read_csv(results / "tables" / "findings.csv").set_index("finding")
    assert {"expand_vs_fixed_moe", "expand_utility_vs_uniform"} <= set(findings.index)
    assert findings.loc["expand_vs_fixed_moe", "verdict"] != F.NOT_MEASURED
    assert (results / "figures" / "training_curves.png").stat().st_size > 1000
    dry = run_snakemake(repo_copy, tmp_path, "--configfile", str(config), "-n")
    assert "Nothing to be done" in dry.stdout
