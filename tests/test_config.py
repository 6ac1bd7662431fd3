"""Config validation (defaults, one-line errors naming the key) and the grid it expands to."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
from conftest import REPO

from stages.core.cli import UserError
from stages.core.options import as_dict, from_json, option, schema_of, to_json
from stages.laws.options import FitConfig
from stages.model.config import ModelConfig, MoEConfig
from stages.surgery.recipe import UpcycleRecipe
from stages.training.options import EvalConfig, TrainConfig
from stages.workflow.config import load_yaml, validate_config
from stages.workflow.grid import Grid
from stages.workflow.runs import derive_seed
from stages.workflow.schema import SCHEMA_FILE, config_schema, schema_text
from stages.workflow.sections import StudyTraining, VariantTraining

SEED_DENSE_S = 5073415186671776547

DEFAULT = load_yaml(REPO / "config" / "config.yaml")


def with_change(path: str, value, base=DEFAULT) -> dict:
    cfg = copy.deepcopy(base)
    node = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return cfg


def test_defaults_are_filled():
    cfg = validate_config({"models": DEFAULT["models"], "grid": {"dense": {"models": ["s"], "d1": ["1M"]}}})
    assert cfg["train"]["seq_len"] == 128 and cfg["data"]["vocab_size"] == 2048
    assert cfg["fits"] == {} and cfg["moe"] == {}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("train.lrr", 0.1, "config key 'train.lrr': unknown key"),
        ("train.lr", "fast", "config key 'train.lr': expected number"),
        ("train.batch_size", 0, "config key 'train.batch_size'"),
        ("grid.dense.d1", [], "config key 'grid.dense.d1': must not be empty"),
        ("grid.dense.d1", ["-5K"], "config key 'grid.dense.d1.0'"),
        ("grid.dense.d1", ["1M", "1000K"], "duplicate token budget"),
        ("grid.upcycled", {"models": ["s"], "moe": ["e9"], "d1": ["1M"], "d2": ["1M"]}, "'e9' is not defined"),
        ("grid.dense.models", ["s", "s"], "config key 'grid.dense.models'"),
        ("grid.dense.models", ["zz"], "'zz' is not defined under 'models'"),
        ("models.s.n_layer", 0, "config key 'models.s.n_layer'"),
        ("models.s.n_head", 5, "config key 'models.s'"),
        ("data.vocab_size", 100, "config key 'data.vocab_size'"),
        ("data.sources", ["gutenberg"], "unknown source 'gutenberg'"),
        ("moe.e8k2.top_k", 9, "config key 'moe.e8k2'"),
        ("moe.e8k2.granularity", 3, "granularity"),
        ("moe.e8k2.drop_ratio", 1.5, "config key 'moe.e8k2.drop_ratio'"),
        ("moe.e8k2.aux_loss_coef", -0.1, "config key 'moe.e8k2.aux_loss_coef'"),
        ("moe.e8k2.method", "magic", "config key 'moe.e8k2.method'"),
        ("fits.upcycled.law", "kaplan", "unknown law 'kaplan'"),
        ("grid.dense.d1", ["10"], "less than one optimizer step"),
        ("figures", ["pie_chart"], "unknown figure 'pie_chart'"),
        ("fits.scratch_chinchilla", None, "'threshold' needs the fit 'scratch_chinchilla'"),
        ("planner.moe", "e99", "config key 'planner'"),
        ("train.warmup_steps", 0, "config key 'train.warmup_steps': a wsd schedule needs a fixed warmup"),
        ("train.lr_policy", "constant_min", "config key 'train.lr_policy'"),
        ("moe.e8k2.lr_policy", "continue", "config key 'moe.e8k2.lr_policy': 'continue' resumes"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(path, value, message):
    with pytest.raises(UserError) as info:
        validate_config(with_change(path, value))
    text = str(info.value)
    assert message in text and "\n" not in text


def test_default_grid_runs_and_paths():
    grid = Grid(validate_config(DEFAULT))
    kinds = {k: len(grid.of_kind(k)) for k in ("dense", "upcycled", "scratch_moe", "dense_cont")}
    # 3 sizes x 4 D1 (+ s at 100K, an upcycling parent, + s/200K at seeds 2 and 3: the replicated pairs' parent),
    # 4 x 4 upcycled (+ D2 = 1.6M at D1 = 100K, + 2 replicas), 3 sizes x 4 scratch (+ s at 1.6M, + 2 replicas),
    # 2 x 4 continued (+ 2 cells x 2 replicas)
    assert kinds == {"dense": 15, "upcycled": 19, "scratch_moe": 15, "dense_cont": 12}
    run = grid.of_kind("upcycled")[0]
    assert run.directory.startswith("results/moe/s/d1_") and "/e8k2/d2_" in run.directory
    assert run.eval_json == f"results/eval/{run.run_id}/eval.json"
    assert len(grid.upcycle_inits()) == 6


def test_replicas_train_a_cell_again_with_its_whole_lineage_under_other_seeds():
    cfg = with_change("grid.replicas", {"seeds": 3, "runs": ["moe/s/d1_400K/e8k2/d2_400K"]})
    grid = Grid(validate_config(cfg))
    ids = {r.run_id for r in grid.runs}
    for k in (2, 3):
        assert f"moe/s@{k}/d1_400K/e8k2/d2_400K" in ids and f"dense/s@{k}/d1_400K" in ids  # parent replicated
    replica = grid.run("upcycled", "s@2", "e8k2", d1="400K", d2="400K")
    assert replica.labels() == {"kind": "upcycled", "model": "s", "moe": "e8k2", "D1": "400K", "D2": "400K"} | {
        "replica": "2"
    }
    assert grid.model_json("s@2") == grid.model_json("s")  # same shape
    assert grid.seed("upcycled", "s@2", "e8k2") != grid.seed("upcycled", "s", "e8k2")
    assert grid.data_seed("s@2") != grid.data_seed("s") == grid.data_seed()  # replicas see another data order
    assert grid.init_dir(replica) == "results/upcycled/s@2/d1_400K/e8k2"


def test_a_replica_of_a_run_outside_the_grid_is_one_line_naming_the_key():
    cfg = with_change("grid.replicas", {"runs": ["dense/s/d1_123K"]})
    with pytest.raises(UserError, match=r"^config key 'grid.replicas.runs': 'dense/s/d1_123K' is not a run"):
        Grid(validate_config(cfg))


def test_grid_sections_take_a_list_of_blocks():
    blocks = [
        {"models": ["s"], "moe": ["e8k2"], "d1": ["400K"], "d2": ["100K", "200K"]},
        {"models": ["xs"], "moe": ["e8k2"], "d1": ["800K"], "d2": ["100K"]},
    ]
    cfg = with_change("grid.replicas", None, base=with_change("grid.upcycled", blocks))
    grid = Grid(validate_config(cfg))
    assert {r.run_id for r in grid.of_kind("upcycled")} == {
        "moe/s/d1_400K/e8k2/d2_100K",
        "moe/s/d1_400K/e8k2/d2_200K",
        "moe/xs/d1_800K/e8k2/d2_100K",
    }
    bad = with_change("grid.upcycled", [{**blocks[0], "moe": ["nope"]}])
    with pytest.raises(UserError, match="grid.upcycled.moe"):
        validate_config(bad)


def test_parents_of_upcycled_runs_join_the_grid():
    cfg = with_change("grid.dense.d1", ["200K"])
    grid = Grid(validate_config(cfg))
    assert {r.d1 for r in grid.of_kind("dense") if r.model == "s"} == {"100K", "200K", "400K", "800K"}


def test_seeds_derive_from_identity_not_budget():
    grid = Grid(validate_config(DEFAULT))
    # pinned: a change to the derivation silently changes every run of every study
    assert grid.seed("dense", "s") == derive_seed(20250205, "dense", "s", "") == SEED_DENSE_S
    seeds = {
        grid.seed(kind, model, moe)
        for kind in ("dense", "scratch_moe", "upcycled", "dense_cont")
        for model in ("xs", "s", "m")
        for moe in ("", "e8k2")
    }
    assert len(seeds) == 24  # every identity its own seed
    assert derive_seed(1, "dense", "s") != derive_seed(2, "dense", "s")
    assert all(0 <= s < 2**63 for s in seeds)


# ----- option groups: one definition per option, the schema generated from them ---------------------------

GROUPS = [  # (option group, where its keys live in the config schema, keys the section does not take)
    (ModelConfig, ("$defs", "model"), ("vocab_size", "max_seq_len")),
    (MoEConfig, ("$defs", "moe"), ()),
    (UpcycleRecipe, ("$defs", "moe"), ()),
    (VariantTraining, ("$defs", "moe"), ()),
    (TrainConfig, ("properties", "train"), ("lr_policy",)),
    (StudyTraining, ("properties", "train"), ()),
    (EvalConfig, ("properties", "evaluate"), ()),
    (FitConfig, ("$defs", "fit"), ()),
]


def _section(schema, where):
    node = schema
    for key in where:
        node = node[key]
    return node


def test_schema_file_is_generated_from_the_option_groups():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), "run `make schema` and commit the file"


@pytest.mark.parametrize(("group", "where", "excluded"), GROUPS, ids=[g[0].__name__ for g in GROUPS])
def test_every_option_is_in_the_schema_with_its_default_and_nothing_else(group, where, excluded):
    section = _section(config_schema(), where)["properties"]
    fields = {f.name: f for f in dataclasses.fields(group) if "help" in f.metadata and f.name not in excluded}
    groups_of_section = [g for g, w, _ in GROUPS if w == where]
    owned = {f.name for g in groups_of_section for f in dataclasses.fields(g) if "help" in f.metadata}
    assert set(fields) <= set(section) and set(section) <= owned | set(excluded)
    for name, f in fields.items():
        if f.default is not dataclasses.MISSING:
            expected = list(f.default) if isinstance(f.default, tuple) else f.default
            assert section[name]["default"] == expected, name
        assert section[name]["description"], name


def test_config_defaults_build_each_group():
    cfg = validate_config(DEFAULT)
    grid = Grid(cfg)
    train = json.loads(grid.train_json("constant_min"))
    assert train == {
        **as_dict(TrainConfig()),
        **{k: cfg["train"][k] for k in train if k in cfg["train"]},
        "lr_policy": "constant_min",
    }
    assert json.loads(grid.moe_json("e8k2"))["norm_topk_prob"] is True
    assert json.loads(grid.recipe_json("e8k2")) == as_dict(UpcycleRecipe())


def test_a_new_option_is_one_field():
    """A field added to a group appears in its schema, its defaults, its JSON and its validation."""
    extended = dataclasses.make_dataclass(
        "MoEWithJitter",
        [("router_jitter", float, option(0.0, help="router input jitter", minimum=0))],
        bases=(MoEConfig,),
        frozen=True,
    )
    schema = schema_of(extended)
    assert schema["properties"]["router_jitter"] == {
        "type": "number",
        "minimum": 0,
        "default": 0.0,
        "description": "router input jitter",
    }
    built = from_json(extended, '{"experts": 4, "top_k": 2, "router_jitter": 0.5}', "--moe")
    assert built.router_jitter == 0.5 and json.loads(to_json(built))["router_jitter"] == 0.5
    with pytest.raises(UserError, match="--moe: .*router_jitter"):
        from_json(extended, '{"experts": 4, "top_k": 2, "router_jitter": -1}', "--moe")


@pytest.mark.parametrize(
    ("group", "text", "message"),
    [
        (TrainConfig, '{"lr": -1}', "--train: config key 'train.lr'"),
        (TrainConfig, '{"lr_policy": "linear"}', "'linear' is not one of"),
        (TrainConfig, '{"batch": 4}', "unknown key"),
        (TrainConfig, "[1]", "expected a JSON object"),
        (UpcycleRecipe, '{"drop_ratio": 0.5}', "only used by method 'drop'"),
        (MoEConfig, '{"experts": 2}', "'top_k' is a required property"),
    ],
)
def test_stage_json_is_validated_like_the_config(group, text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        from_json(group, text, "--" + {TrainConfig: "train", UpcycleRecipe: "recipe", MoEConfig: "moe"}[group])


def test_renormalised_top1_variant_is_refused_naming_the_variant():
    cfg = with_change("moe.e8k2.top_k", 1)
    with pytest.raises(UserError) as info:
        validate_config(cfg)
    text = str(info.value)
    assert text.startswith("config key 'moe.e8k2'") and "moe.norm_topk_prob" in text and "\n" not in text
    validate_config(with_change("moe.e8k2.norm_topk_prob", False, base=cfg))  # plain top-1 is accepted


def _dry_run_paths(tmp_path, *args: str) -> set[str]:
    """Every output, log and benchmark path of a dry run of the default grid (wsd: stable states too)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    cmd += ["-n", *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    paths = set()
    for line in res.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key in ("output", "log", "benchmark"):
            paths.update(p.strip() for p in value.split(","))
    return paths


def test_studies_side_by_side_never_share_a_path(tmp_path):
    """results/<study>/ holds every output of a study (logs and benchmarks too); the unnamed study is results/."""
    a = _dry_run_paths(tmp_path, "--config", "study=demo_a")
    b = _dry_run_paths(tmp_path, "--config", "study=demo-b")
    plain = _dry_run_paths(tmp_path)
    assert a and all(p.startswith("results/demo_a/") for p in a)
    assert b and all(p.startswith("results/demo-b/") for p in b)
    assert {p.replace("results/demo_a/", "results/demo-b/", 1) for p in a} == b
    assert not a & b and not a & plain and not b & plain
    kinds = {p.split("/")[2] for p in a}
    assert {"data", "dense", "upcycled", "moe", "eval", "tables", "fits", "figures", "stable", "logs"} <= kinds
    assert "benchmarks" in kinds
    assert all(p.startswith(("results/", "logs/", "benchmarks/")) for p in plain)


def test_grid_paths_read_the_study_root():
    grid = Grid(validate_config({**DEFAULT, "study": "s2"}))
    assert grid.root == "results/s2" and grid.corpus_dir.startswith("results/s2/data/")
    assert all(r.directory.startswith("results/s2/") and r.eval_json.startswith("results/s2/eval/") for r in grid.runs)
    assert all(d.startswith("results/s2/upcycled/") for d in grid.upcycle_inits())
    plain = Grid(validate_config(DEFAULT))
    assert plain.root == "results" and plain.logs == "logs" and plain.runs == grid.runs  # same runs, other root
    assert plain.seed("dense", "s") == grid.seed("dense", "s")  # a study name changes no seed


@pytest.mark.parametrize("name", ["fits", "dense", "a/b", "../up", "x y", "-lead", ".hidden"])
def test_bad_study_name_is_one_line_naming_the_key(name):
    with pytest.raises(UserError) as info:
        validate_config({**DEFAULT, "study": name})
    assert str(info.value).startswith("config key 'study'") and "\n" not in str(info.value)
