"""Expert expansion surgery: the copies rule, expert weights and router rows, what step 0 preserves, the stage CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_config

from stages.core.cli import UserError, run
from stages.core.record import DataRef, RunRecord
from stages.model.checkpoint import load_model, save_checkpoint
from stages.model.config import MoEConfig
from stages.model.transformer import Transformer, seed_generator
from stages.surgery.expansion import copy_counts, copy_sources, expand, expert_utility, moe_inputs, routing_check
from stages.surgery.expansion_recipe import ExpansionRecipe, expanded_moe

torch.set_num_threads(1)
TOKENS = torch.randint(0, 96, (4, 24), generator=torch.Generator().manual_seed(1))


def parent_model(experts: int = 4, top_k: int = 2, norm: bool = True, seed: int = 0, **moe_kw) -> Transformer:
    """A tiny MoE with trained-size weights: router logits far from uniform, experts that differ."""
    moe = MoEConfig(experts=experts, top_k=top_k, norm_topk_prob=norm, **moe_kw)
    model = Transformer(tiny_config(moe))
    model.init_weights(seed_generator(seed))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mlp.gate.weight"):
                p.mul_(40.0)
            elif p.ndim == 2 or name.endswith("_proj"):
                p.mul_(3.0)
            elif name.endswith("gate.bias"):
                p.copy_(torch.linspace(-0.5, 0.5, p.numel()))
    return model.eval()


def logits(model: Transformer, top_k: int | None = None) -> torch.Tensor:
    """The model's logits, with every MoE layer's top-k set to ``top_k`` for this call (the parent's routing at
    another k, a function its config cannot name: renormalised top-1 is refused as a training config)."""
    layers = [model.model.layers[i].mlp for i in model.cfg.moe_layers()]
    saved = [mlp.top_k for mlp in layers]
    try:
        for mlp in layers:
            mlp.top_k = top_k or mlp.top_k
        with torch.no_grad():
            return model.eval()(TOKENS).logits.double()
    finally:
        for mlp, k in zip(layers, saved, strict=True):
            mlp.top_k = k


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def uniform(factor: int = 2, **kw) -> ExpansionRecipe:
    return ExpansionRecipe(factor=factor, **kw)


def utility_recipe(factor: int = 2, **kw) -> ExpansionRecipe:
    return ExpansionRecipe(factor=factor, selection="utility", **kw)


# ----- which experts are copied -----------------------------------------------------------------------------------


def test_dhondt_copies_go_to_the_highest_utility_per_copy_and_equal_utilities_give_the_uniform_split():
    assert copy_counts([1.0, 1.0, 1.0, 1.0], 2) == [2, 2, 2, 2]
    assert copy_counts([1.0, 1.0, 1.0, 1.0], 4) == [4, 4, 4, 4]
    assert copy_counts([10.0, 1.0, 1.0, 1.0], 2) == [5, 1, 1, 1]  # 10/1, 10/2, 10/3, 10/4 all beat 1/1
    counts = copy_counts([3.0, 2.0, 1.0, 0.0], 2)
    assert counts == [4, 2, 1, 1] and sum(counts) == 8  # 3, 2, 1.5, 1 (tie 1 vs 1: the lower index), ...
    assert copy_sources([2, 1, 3]) == [0, 1, 2, 0, 2, 2]  # the originals first, then the copies in source order


def test_expanded_routing_keeps_top_k_and_adds_a_bias_only_for_uneven_copies():
    moe = MoEConfig(experts=4, top_k=2, norm_topk_prob=True, aux_loss_coef=0.02)
    assert expanded_moe(moe, uniform(4)) == MoEConfig(experts=16, top_k=2, norm_topk_prob=True, aux_loss_coef=0.02)
    assert expanded_moe(moe, utility_recipe()).router_bias and expanded_moe(moe, utility_recipe()).experts == 8
    assert not expanded_moe(moe, utility_recipe(router_offset=False)).router_bias


def test_utility_options_belong_to_utility_selection():
    with pytest.raises(UserError, match="expand.utility_batches: only used by selection 'utility'"):
        ExpansionRecipe(utility_batches=4)
    with pytest.raises(UserError, match="expand.factor"):
        ExpansionRecipe(factor=1)


# ----- expert weights and router rows -----------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", [uniform(2), uniform(3, noise_std=0.1), utility_recipe(2, noise_std=0.1)])
def test_every_copy_is_its_source_and_noise_touches_only_the_new_copies(recipe):
    parent = parent_model(router_bias=True)
    utility = {i: [4.0, 1.0, 2.0, 0.5] for i in parent.cfg.moe_layers()}
    model, copies = expand(parent, recipe, seed=3, utility=utility if recipe.selection == "utility" else None)
    old, new = parent.state_dict(), model.state_dict()
    for name, w in old.items():
        if "mlp.experts" not in name and "mlp.gate." not in name:
            assert torch.equal(new[name], w), name  # attention, norms, embeddings: copied bit for bit
    for layer, counts in copies.items():
        assert sum(counts) == 4 * recipe.factor and min(counts) >= 1
        src = f"model.layers.{layer}.mlp."
        sources = copy_sources(counts)
        for j, e in enumerate(sources):
            assert torch.equal(new[src + "gate.weight"][j], old[src + "gate.weight"][e])  # the source's router row
            # the parent's bias minus ln(copies) (under uniform a constant shift, which softmax ignores)
            expect = float(old[src + "gate.bias"][e]) - math.log(counts[e])
            assert float(new[src + "gate.bias"][j]) == pytest.approx(expect, abs=1e-6)
            for matrix in ("experts.gate_up_proj", "experts.down_proj"):
                same = torch.equal(new[src + matrix][j], old[src + matrix][e])
                assert same == (j < 4 or recipe.noise_std == 0), (layer, j, matrix)  # originals are never noised
        if recipe.noise_std:
            extra = new[src + "experts.down_proj"][4] - old[src + "experts.down_proj"][sources[4]]
            scale = float(extra.std() / old[src + "experts.down_proj"][sources[4]].std())
            assert 0.05 < scale < 0.2  # relative to the matrix's std
    assert copies[0] == ([4, 1, 2, 1] if recipe.selection == "utility" else [recipe.factor] * 4)


def test_uniform_expansion_of_a_parent_without_bias_needs_no_bias():
    model, _ = expand(parent_model(), uniform(2), seed=0)
    assert model.cfg.moe.experts == 8 and model.cfg.moe.top_k == 2 and not model.cfg.moe.router_bias
    assert "model.layers.0.mlp.gate.bias" not in model.state_dict()


# ----- what step 0 preserves ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe", [uniform(2), uniform(4), uniform(2, noise_std=0.3), utility_recipe(2), utility_recipe(4, noise_std=0.3)]
)
def test_the_full_softmax_mass_of_every_original_expert_is_preserved(recipe):
    parent = parent_model()
    utility = {i: [4.0, 1.0, 2.0, 0.5] for i in parent.cfg.moe_layers()}
    model, copies = expand(parent, recipe, seed=1, utility=utility)
    check = routing_check(parent, model, copies, TOKENS)
    assert check["mass_max_abs_diff"] < 1e-6  # exact up to fp32 rounding of logits and of the ln(copies) bias
    for layer, x in moe_inputs(parent, TOKENS).items():  # the same, spelled out on the parent's MoE inputs
        p = torch.softmax(parent.model.layers[layer].mlp.router_logits(x).double(), -1)
        q = torch.softmax(model.model.layers[layer].mlp.router_logits(x).double(), -1)
        summed = torch.zeros_like(p).index_add_(1, torch.tensor(copy_sources(copies[layer])), q)
        torch.testing.assert_close(summed, p, atol=1e-6, rtol=0)


def test_without_the_offset_uneven_copies_move_the_mass_to_the_duplicated_experts():
    parent = parent_model()
    utility = {i: [4.0, 1.0, 2.0, 0.5] for i in parent.cfg.moe_layers()}
    model, copies = expand(parent, utility_recipe(router_offset=False), seed=1, utility=utility)
    assert routing_check(parent, model, copies, TOKENS)["mass_max_abs_diff"] > 0.05


@pytest.mark.parametrize("factor", [2, 4])
def test_uniform_renormalised_top_k_with_m_dividing_k_is_the_parent_at_top_k_over_m(factor):
    """Copies tie, so renormalised top-k picks whole groups of m copies: the parent's top-(k/m) experts."""
    parent = parent_model(experts=4, top_k=4, norm=True)
    model, _ = expand(parent, uniform(factor), seed=0)
    assert rel_err(logits(model), logits(parent, top_k=4 // factor)) < 1e-5
    # the function at step 0 is not the parent's: top-k fixed at 4 covers fewer distinct experts
    assert rel_err(logits(model), logits(parent)) > 1e-3


def test_uniform_expansion_with_k_smaller_than_m_and_renormalisation_routes_to_the_top_expert_alone():
    parent = parent_model(experts=4, top_k=2, norm=True)
    model, copies = expand(parent, uniform(2), seed=0)
    assert rel_err(logits(model), logits(parent, top_k=1)) < 1e-5
    assert routing_check(parent, model, copies, TOKENS)["distinct_originals_in_topk"] == 1.0


def test_uniform_expansion_without_renormalisation_shrinks_the_routed_weights():
    parent = parent_model(experts=4, top_k=1, norm=False)
    model, copies = expand(parent, uniform(2), seed=0)
    check = routing_check(parent, model, copies, TOKENS)
    assert check["topk_mass_expanded"] == pytest.approx(check["topk_mass_parent"] / 2, rel=1e-6)


def test_expert_utility_is_gradient_importance_and_ignores_a_dead_expert():
    parent = parent_model()
    with torch.no_grad():
        parent.model.layers[0].mlp.experts.down_proj[3].zero_()  # expert 3 of layer 0 adds nothing
    batches = [torch.randint(0, 96, (2, 17), generator=torch.Generator().manual_seed(s)) for s in range(3)]
    util = expert_utility(parent, batches)
    assert set(util) == set(parent.cfg.moe_layers()) and all(len(u) == 4 for u in util.values())
    assert util[0][3] == 0.0 and min(util[0][:3]) > 0 and min(util[1]) > 0
    assert util == expert_utility(parent, batches)  # deterministic
    assert copy_counts(util[0], 2)[3] == 1  # no extra copy for it
    assert all(p.grad is None for p in parent.parameters())  # the parent is left as it was


def test_expanding_a_dense_model_is_refused():
    with pytest.raises(UserError, match="expansion needs an MoE"):
        expand(Transformer(tiny_config()), uniform(2), seed=0)


# ----- the stage command ------------------------------------------------------------------------------------------


def save_parent(directory: Path, model: Transformer) -> Path:
    record = RunRecord(
        run_id="scratch/xs/e4k2/d_8K",
        kind="scratch_moe",
        code_hash="",
        torch_version="",
        tokens=8192,
        flops=1e9,
        data=DataRef(data_seed=5, end_sequence=256),
        train={"seq_len": 24},
    )
    save_checkpoint(directory, model, record)
    return directory


def expand_cmd(parent: Path, out: Path, corpus: Path, recipe: str) -> list[str]:
    return ["--parent", str(parent), "--out", str(out), "--data", str(corpus), "--recipe", recipe, "--seed", "3"]


def test_cli_writes_the_expanded_checkpoint_report_and_record_deterministically(tmp_path, corpus_dir):
    parent_dir = save_parent(tmp_path / "scratch", parent_model())
    recipe = '{"factor": 2, "selection": "utility", "utility_batches": 2, "utility_batch_size": 4, "noise_std": 0.01}'
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = [sys.executable, "-m", "stages.expand", *expand_cmd(parent_dir, out, corpus_dir, recipe)]
        argv += ["--eval-tokens", "2048", "--labels", '{"expansion": "x2g"}']
        subprocess.run(argv, check=True, cwd=REPO, capture_output=True)
        runs.append(out)
    report = json.loads((runs[0] / "surgery.json").read_text())
    assert report["experts"] == [4, 8] and report["top_k"] == 2
    assert report["delta_val_loss"] == pytest.approx(report["expanded_val_loss"] - report["parent_val_loss"])
    assert report["mass_max_abs_diff"] < 1e-6 and report["topk_mass_expanded"] < report["topk_mass_parent"]
    assert all(sum(c) == 8 for c in report["copies"].values()) and set(report["utility"]) == {"0", "1"}
    prov = json.loads((runs[0] / "provenance.json").read_text())
    assert prov["kind"] == "expand" and prov["lineage"][-1]["run_id"] == "scratch/xs/e4k2/d_8K"
    assert prov["data"]["end_sequence"] == 256 and prov["recipe"]["selection"] == "utility"
    assert prov["labels"] == {"expansion": "x2g"}
    model, record = load_model(runs[0])
    assert model.cfg.moe.experts == 8 and model.cfg.moe.router_bias and record.seed == 3
    a, b = ((r / "model.safetensors").read_bytes() for r in runs)
    assert a == b


def _main(argv: list[str]) -> None:
    from stages.expand import main

    main(argv)


@pytest.mark.parametrize(
    ("recipe", "dense", "needle"),
    [
        ('{"factor": 1}', False, "'recipe.factor': 1 is out of range"),
        ('{"utility_batches": 3}', False, "only used by selection 'utility'"),
        ("{}", True, "a dense checkpoint; expansion needs an MoE"),
    ],
)
def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, corpus_dir, capsys, recipe, dense, needle):
    model = Transformer(tiny_config()) if dense else parent_model()
    parent_dir = save_parent(tmp_path / "parent", model)
    with pytest.raises(SystemExit) as exc:
        run(_main, expand_cmd(parent_dir, tmp_path / "out", corpus_dir, recipe))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_expanded_checkpoint_with_a_router_bias_is_not_exported(tmp_path, corpus_dir, capsys):
    from stages.export import main as export_main

    parent_dir = save_parent(tmp_path / "scratch", parent_model())
    recipe = '{"selection": "utility", "utility_batches": 1, "utility_batch_size": 2}'
    run(_main, [*expand_cmd(parent_dir, tmp_path / "x", corpus_dir, recipe), "--eval-tokens", "1024"])
    with pytest.raises(SystemExit) as exc:
        run(export_main, ["--checkpoint", str(tmp_path / "x"), "--to", "hf", "--out", str(tmp_path / "hf")])
    assert exc.value.code == 2 and "moe.router_bias" in capsys.readouterr().err
