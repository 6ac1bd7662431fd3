"""Config validation (defaults, one-line errors naming the key) and the grid it expands to."""

from __future__ import annotations

import copy

import pytest
from conftest import REPO

from stages.core.cli import UserError
from stages.workflow.config import load_yaml, validate_config
from stages.workflow.grid import Grid, derive_seed

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
        ("grid.upcycled.moe", ["e9"], "'e9' is not defined under 'moe'"),
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
    assert kinds == {"dense": 9, "upcycled": 9, "scratch_moe": 6, "dense_cont": 6}
    run = grid.of_kind("upcycled")[0]
    assert run.directory.startswith("results/moe/s/d1_") and "/e8k2/d2_" in run.directory
    assert run.eval_json == f"results/eval/{run.run_id}/eval.json"
    assert len(grid.upcycle_inits()) == 3


def test_parents_of_upcycled_runs_join_the_grid():
    cfg = with_change("grid.dense.d1", ["200K"])
    grid = Grid(validate_config(cfg))
    assert {r.d1 for r in grid.of_kind("dense") if r.model == "s"} == {"200K", "400K", "800K"}


def test_seeds_derive_from_identity_not_budget():
    grid = Grid(validate_config(DEFAULT))
    assert grid.seed("dense", "s") == grid.seed("dense", "s") != grid.seed("dense", "m")
    assert derive_seed(1, "dense", "s") != derive_seed(2, "dense", "s")
    assert 0 <= derive_seed("x") < 2**63
