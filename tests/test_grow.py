"""Growth surgery: function preservation where theory says so, zero-padding, validation, the stage CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_config

from stages.core.cli import UserError, run
from stages.core.record import RunRecord
from stages.model.checkpoint import load_model, save_checkpoint, state_dict_for_saving
from stages.model.config import ModelConfig, MoEConfig
from stages.model.transformer import Transformer, seed_generator
from stages.surgery.growth import GrowthRecipe as Recipe
from stages.surgery.growth import check_growth, grow, layer_sources

torch.set_num_threads(1)
TOKENS = torch.randint(0, 96, (4, 24), generator=torch.Generator().manual_seed(1))


def parent_model(seed: int = 0, **kw) -> Transformer:
    """A tiny dense model with non-trivial gains and biases, so that tiling them is actually tested."""
    model = Transformer(tiny_config(**kw))
    model.init_weights(seed_generator(seed))
    gen = seed_generator(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.mul_(5.0)  # trained-size weights: logits far from uniform
    return model.eval()


def grown_config(parent: Transformer, **kw) -> ModelConfig:
    spec = parent.cfg.to_dict()
    if parent.cfg.n_kv_head == parent.cfg.n_head:
        spec["n_kv_head"] = 0  # keep plain multi-head attention when the heads change
    spec.update(kw)
    return ModelConfig.from_dict(spec)


def logits(model: Transformer) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(TOKENS).logits.double()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize(("kv", "bias", "ff"), [(4, False, 2), (2, True, 2), (4, True, 1), (1, False, 3)])
def test_hypercloning_width_preserves_the_logits(tie, kv, bias, ff):
    parent = parent_model(tie_embeddings=tie, n_kv_head=kv, qkv_bias=bias)
    target = grown_config(parent, d_model=64, n_head=8, n_kv_head=2 * kv, d_ff=64 * ff)
    grown = grow(parent, target, Recipe(), seed=0)
    assert rel_err(logits(grown), logits(parent)) <= 3e-6
    sd = grown.state_dict()
    assert torch.equal(sd["model.embed_tokens.weight"][:, 32:], parent.state_dict()["model.embed_tokens.weight"])
    final = sd["model.norm.weight"][:32] * (2 if tie else 1)  # tied: the head sums two copies, the gain is halved
    assert torch.allclose(final, parent.state_dict()["model.norm.weight"])


def test_hypercloning_width_three_and_noise_keep_the_function_but_break_the_symmetry():
    parent = parent_model(tie_embeddings=False)
    target = grown_config(parent, d_model=96, n_head=12, d_ff=128)
    plain = grow(parent, target, Recipe(), seed=0)
    noisy = grow(parent, target, Recipe(noise_std=0.1), seed=0)
    assert rel_err(logits(plain), logits(parent)) <= 3e-6
    assert rel_err(logits(noisy), logits(parent)) <= 3e-6
    q = noisy.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(q[:, :32], q[:, 32:64])  # the copies differ, so training can pull them apart
    q_plain = plain.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(q_plain[:, :32], q_plain[:, 32:64]) and torch.equal(q_plain[:32], q_plain[64:])


@pytest.mark.parametrize("tie", [True, False])
def test_hypercloning_under_mup_makes_up_for_the_smaller_logit_multiplier(tie):
    mup = {"parametrization": "mup", "mup_base_d_model": 16}  # parent at m = 2, grown at m = 4
    parent = parent_model(tie_embeddings=tie, **mup)
    target = grown_config(parent, d_model=64, n_head=8, d_ff=128, mup_base_head_dim=4)
    grown = grow(parent, target, Recipe(noise_std=0.05), seed=0)
    assert grown.logit_multiplier == parent.logit_multiplier / 2
    assert rel_err(logits(grown), logits(parent)) <= 3e-6
    with pytest.raises(UserError, match="model.mup_base_head_dim"):  # 0 would mean 16 / 8 = 2, not the parent's 4
        check_growth(parent.cfg, grown_config(parent, d_model=64, n_head=8, d_ff=128), Recipe())


@pytest.mark.parametrize("depth", ["stack", "interleave"])
def test_depth_growth_with_zero_output_preserves_the_function(depth):
    parent = parent_model()
    target = grown_config(parent, n_layer=6)
    grown = grow(parent, target, Recipe(depth=depth, new_blocks="zero_output"), seed=0)
    assert rel_err(logits(grown), logits(parent)) <= 1e-6
    copied = grow(parent, target, Recipe(depth=depth), seed=0)
    assert rel_err(logits(copied), logits(parent)) > 1e-3  # plain copies change the function
    sources = layer_sources(2, 6, depth)
    assert sources == ([0, 1, 0, 1, 0, 1] if depth == "stack" else [0, 0, 0, 1, 1, 1])
    p, g = parent.state_dict(), copied.state_dict()
    for j, src in enumerate(sources):
        name = "self_attn.q_proj.weight"
        assert torch.equal(g[f"model.layers.{j}.{name}"], p[f"model.layers.{src}.{name}"])


def test_width_and_depth_combine_and_preserve_the_function():
    parent = parent_model(tie_embeddings=True, n_kv_head=2)
    target = grown_config(parent, n_layer=4, d_model=64, n_head=8, n_kv_head=4, d_ff=128)
    grown = grow(parent, target, Recipe(depth="interleave", new_blocks="zero_output", noise_std=0.05), seed=3)
    assert rel_err(logits(grown), logits(parent)) <= 3e-6


def test_shrink_perturb_without_shrink_or_perturbation_is_zero_padding():
    parent = parent_model(tie_embeddings=False, qkv_bias=True)
    target = grown_config(parent, n_layer=2, d_model=48, n_head=6, d_ff=80)
    grown = grow(parent, target, Recipe(method="shrink_perturb", shrink=1.0, perturb=0.0), seed=0)
    p, g = state_dict_for_saving(parent), state_dict_for_saving(grown)
    for name, w in p.items():
        corner = tuple(slice(0, s) for s in w.shape)
        assert torch.equal(g[name][corner], w), name
        rest = g[name].clone()
        rest[corner] = 0.0 if not name.endswith("norm.weight") else 1.0
        fill = 1.0 if name.endswith("norm.weight") else 0.0
        assert torch.equal(rest, torch.full_like(rest, fill)), name


def test_shrink_perturb_adds_the_scaled_fresh_initialisation():
    parent = parent_model()
    target = grown_config(parent, d_model=48, n_head=6, d_ff=96)
    recipe = Recipe(method="shrink_perturb", shrink=0.3, perturb=0.5)
    grown = grow(parent, target, recipe, seed=4).state_dict()
    fresh = Transformer(target)
    fresh.init_weights(seed_generator(4))
    w0 = fresh.state_dict()["model.layers.1.mlp.up_proj.weight"]
    up = grown["model.layers.1.mlp.up_proj.weight"]
    parent_up = parent.state_dict()["model.layers.1.mlp.up_proj.weight"]
    assert torch.allclose(up[:64, :32], 0.3 * parent_up + 0.5 * w0[:64, :32])
    assert torch.allclose(up[64:, :], 0.5 * w0[64:, :])
    again = grow(parent, target, recipe, seed=4).state_dict()
    assert all(torch.equal(grown[k], again[k]) for k in grown)
    other = grow(parent, target, recipe, seed=5).state_dict()
    assert not torch.equal(grown["model.layers.1.mlp.up_proj.weight"], other["model.layers.1.mlp.up_proj.weight"])


@pytest.mark.parametrize(
    ("change", "recipe", "key"),
    [
        ({"d_model": 48, "n_head": 6}, Recipe(), "model.d_model"),
        ({"d_ff": 96}, Recipe(), "model.d_ff"),
        ({"n_layer": 3}, Recipe(), "model.n_layer"),
        ({"d_model": 64}, Recipe(), "model.n_head"),
        ({"d_model": 64, "n_head": 8, "n_kv_head": 8}, Recipe(), "model.n_kv_head"),
        ({"vocab_size": 128}, Recipe(), "model.vocab_size"),
        ({"tie_embeddings": False}, Recipe(), "model.tie_embeddings"),
        ({"d_model": 16, "n_head": 2}, Recipe(method="shrink_perturb"), "model.d_model"),
        ({"moe": {"experts": 4, "top_k": 2}}, Recipe(), "model.moe"),
    ],
)
def test_targets_the_recipe_cannot_reach_are_refused_naming_the_key(change, recipe, key):
    parent = parent_model(n_kv_head=2)
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        check_growth(parent.cfg, grown_config(parent, **change), recipe)


def test_recipe_options_of_another_method_and_moe_parents_are_refused():
    with pytest.raises(UserError, match="grow.shrink"):
        Recipe(shrink=0.2)
    with pytest.raises(UserError, match="grow.noise_std"):
        Recipe(method="shrink_perturb", noise_std=0.1)
    moe = tiny_config(MoEConfig(experts=4, top_k=2))
    with pytest.raises(UserError, match="dense parent"):
        check_growth(moe, tiny_config(d_model=64, n_head=8), Recipe())


def grow_cmd(parent: Path, out: Path, corpus: Path, model: dict, recipe: str) -> list[str]:
    return [
        "--parent",
        str(parent),
        "--out",
        str(out),
        "--data",
        str(corpus),
        "--model",
        json.dumps(model),
        "--recipe",
        recipe,
        "--seed",
        "3",
        "--eval-tokens",
        "512",
    ]


def save_parent(directory: Path, model: Transformer) -> Path:
    save_checkpoint(directory, model, RunRecord(run_id="dense", kind="dense", code_hash="", torch_version=""))
    return directory


def test_cli_writes_the_grown_checkpoint_report_and_record_deterministically(tmp_path, corpus_dir):
    parent = parent_model()
    parent_dir = save_parent(tmp_path / "dense", parent)
    model = grown_config(parent, n_layer=4, d_model=64, n_head=8, d_ff=128).to_dict()
    recipe = '{"method": "hypercloning", "noise_std": 0.05, "new_blocks": "zero_output"}'
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = [sys.executable, "-m", "stages.grow", *grow_cmd(parent_dir, out, corpus_dir, model, recipe)]
        subprocess.run(argv, check=True, cwd=REPO, capture_output=True)
        runs.append(out)
    report = json.loads((runs[0] / "surgery.json").read_text())
    assert report["function_preserving"] and report["factors"] == {
        "d_model": 2.0,
        "d_ff": 2.0,
        "n_head": 2.0,
        "n_layer": 2,
    }
    assert abs(report["grown_val_loss"] - report["parent_val_loss"]) < 1e-4
    assert report["max_rel_logit_diff"] <= 3e-6
    prov = json.loads((runs[0] / "provenance.json").read_text())
    assert prov["kind"] == "grow" and prov["lineage"][-1]["run_id"] == "dense"
    assert prov["parent"]["path"] == str(parent_dir) and prov["parent"]["weights_sha256"]
    assert prov["recipe"]["method"] == "hypercloning"
    grown, record = load_model(runs[0])
    assert grown.cfg.d_model == 64 and grown.cfg.n_layer == 4 and record.seed == 3
    a, b = ((r / "model.safetensors").read_bytes() for r in runs)
    assert a == b


def test_cli_shrink_perturb_reports_both_losses(tmp_path, corpus_dir):
    parent_dir = save_parent(tmp_path / "dense", parent_model())
    model = grown_config(parent_model(), d_model=48, n_head=6, d_ff=96).to_dict()
    out = tmp_path / "sp"
    run(_main, grow_cmd(parent_dir, out, corpus_dir, model, '{"method": "shrink_perturb"}'))
    report = json.loads((out / "surgery.json").read_text())
    assert not report["function_preserving"] and report["grown_val_loss"] > 0 and report["parent_val_loss"] > 0
    assert report["recipe"] == {
        "method": "shrink_perturb",
        "depth": "stack",
        "new_blocks": "copy",
        "noise_std": 0.0,
        "shrink": 0.5,
        "perturb": 1.0,
    }


def _main(argv):
    from stages.grow import main

    main(argv)


@pytest.mark.parametrize(
    ("model_change", "recipe", "parent_kw", "needle"),
    [
        ({"d_model": 48, "n_head": 6}, "{}", {}, "model.d_model"),
        ({"n_layer": 3}, "{}", {}, "model.n_layer"),
        ({"colour": 1}, "{}", {}, "colour"),
        ({"d_model": 64, "n_head": 8}, '{"method": "magic"}', {}, "--recipe"),
        ({"d_model": 64, "n_head": 8}, "{}", {"moe": MoEConfig(experts=4, top_k=2)}, "dense parent"),
    ],
)
def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, corpus_dir, capsys, model_change, recipe, parent_kw, needle):
    parent = Transformer(tiny_config(**parent_kw))
    parent.init_weights(seed_generator(0))
    parent_dir = save_parent(tmp_path / "dense", parent)
    model = {**tiny_config().to_dict(), "n_kv_head": 0, **model_change}
    with pytest.raises(SystemExit) as exit_info:
        run(_main, grow_cmd(parent_dir, tmp_path / "out", corpus_dir, model, recipe))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
