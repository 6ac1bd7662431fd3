"""Upcycling surgery: copies, function preservation where theory says so, recipes, the stage CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_config

from stages.core.cli import UserError
from stages.model.config import MoEConfig
from stages.model.transformer import Transformer, seed_generator
from stages.surgery.recipe import UpcycleRecipe as Recipe
from stages.surgery.upcycling import drop_reinit, scaling_factor, upcycle


def dense_model(seed: int = 0, **kw) -> Transformer:
    model = Transformer(tiny_config(**kw))
    model.init_weights(seed_generator(seed))
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


TOKENS = torch.randint(0, 96, (4, 24), generator=torch.Generator().manual_seed(1))


def test_naive_copies_every_tensor_and_the_ffn_into_each_expert():
    dense = dense_model()
    moe = upcycle(dense, MoEConfig(experts=4, top_k=2), Recipe(), seed=0)
    d, m = dense.state_dict(), moe.state_dict()
    for name in d:
        if ".mlp." not in name:
            assert torch.equal(d[name], m[name]), name
    gate_up = m["model.layers.0.mlp.experts.gate_up_proj"]
    for e in range(4):
        assert torch.equal(
            gate_up[e], torch.cat([d["model.layers.0.mlp.gate_proj.weight"], d["model.layers.0.mlp.up_proj.weight"]])
        )
        assert torch.equal(m["model.layers.0.mlp.experts.down_proj"][e], d["model.layers.0.mlp.down_proj.weight"])


@pytest.mark.parametrize("top_k", [2, 4])  # top-1 with renormalised weights is refused (the router gets no gradient)
def test_naive_with_renormalised_routing_preserves_the_function(top_k):
    dense = dense_model()
    moe = upcycle(dense, MoEConfig(experts=4, top_k=top_k, norm_topk_prob=True), Recipe(), seed=3).eval()
    with torch.no_grad():
        assert rel_err(moe(TOKENS).logits, dense(TOKENS).logits) <= 1e-6


@pytest.mark.parametrize(("experts", "granularity", "top_k"), [(4, 2, 2), (8, 4, 4), (8, 2, 4)])
def test_virtual_group_with_down_scaling_preserves_the_function(experts, granularity, top_k):
    dense = dense_model()
    moe_cfg = MoEConfig(experts=experts, top_k=top_k, granularity=granularity, norm_topk_prob=True)
    moe = upcycle(dense, moe_cfg, Recipe(method="virtual_group", scale_spread="down"), seed=5).eval()
    with torch.no_grad():
        assert rel_err(moe(TOKENS).logits, dense(TOKENS).logits) <= 1e-6
    router = moe.state_dict()["model.layers.0.mlp.gate.weight"]
    for j in range(experts):  # experts of one virtual group share the router row of the group
        assert torch.equal(router[j], router[(j // granularity) * granularity])


def test_scaling_moves_unnormalised_routing_towards_the_dense_model():
    dense = dense_model()
    cfg = MoEConfig(experts=8, top_k=2, norm_topk_prob=False)
    assert scaling_factor(cfg) == 4.0
    unscaled = upcycle(dense, cfg, Recipe(), seed=1).eval()
    scaled = upcycle(dense, cfg, Recipe(scale_spread="down"), seed=1).eval()
    megatron = upcycle(dense, cfg, Recipe(scale_spread="megatron"), seed=1).eval()
    with torch.no_grad():
        ref = dense(TOKENS).logits
        errs = [rel_err(m(TOKENS).logits, ref) for m in (unscaled, scaled, megatron)]
    assert errs[1] < errs[0] and errs[2] < errs[0]


def test_drop_upcycling_reinitialises_the_requested_share_of_neurons():
    gen = seed_generator(0)
    gate, up, down = torch.randn(16, 8), torch.randn(16, 8), torch.randn(8, 16)
    g, u, d = drop_reinit(gate, up, down, 0.5, shared=True, gen=gen)
    changed = [(g[i] != gate[i]).all().item() for i in range(16)]
    assert sum(changed) == 8
    assert all((u[i] != up[i]).all().item() == changed[i] for i in range(16))  # shared index set
    assert all((d[:, i] != down[:, i]).all().item() == changed[i] for i in range(16))
    g0, _, _ = drop_reinit(gate, up, down, 0.0, shared=True, gen=gen)
    assert torch.equal(g0, gate)
    _, u_sep, _ = drop_reinit(gate, up, down, 0.5, shared=False, gen=seed_generator(0))
    assert sum((u_sep[i] != up[i]).all().item() for i in range(16)) == 8


def test_drop_experts_differ_and_ratio_is_validated():
    dense = dense_model()
    moe = upcycle(dense, MoEConfig(experts=4, top_k=2), Recipe(method="drop", drop_ratio=0.5), seed=2)
    gu = moe.state_dict()["model.layers.1.mlp.experts.gate_up_proj"]
    assert not torch.equal(gu[0], gu[1])
    with pytest.raises(UserError, match="drop_ratio"):
        upcycle(dense, MoEConfig(experts=4, top_k=2), Recipe(method="drop", drop_ratio=1.5), seed=2)
    with pytest.raises(UserError, match="method"):
        upcycle(dense, MoEConfig(experts=4, top_k=2), Recipe(method="magic"), seed=2)


def test_same_seed_same_surgery():
    dense = dense_model()
    recipe = Recipe(method="drop", drop_ratio=0.25, noise_std=0.01)
    a = upcycle(dense, MoEConfig(experts=4, top_k=2), recipe, seed=9).state_dict()
    b = upcycle(dense, MoEConfig(experts=4, top_k=2), recipe, seed=9).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_reports_step0_losses(tmp_path, corpus_dir):
    from stages.core.record import RunRecord
    from stages.model.checkpoint import save_checkpoint

    dense = dense_model()
    save_checkpoint(tmp_path / "dense", dense, RunRecord(run_id="dense", kind="dense", code_hash="", torch_version=""))
    out = tmp_path / "moe"
    base = [
        sys.executable,
        "-m",
        "stages.upcycle",
        "--dense",
        str(tmp_path / "dense"),
        "--out",
        str(out),
        "--data",
        str(corpus_dir),
        "--seed",
        "1",
        "--eval-tokens",
        "512",
    ]
    subprocess.run(
        base + ["--moe", '{"experts": 4, "top_k": 2, "norm_topk_prob": true}'],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    report = json.loads((out / "surgery.json").read_text())
    assert abs(report["moe_val_loss"] - report["dense_val_loss"]) < 1e-5
    assert report["max_rel_logit_diff"] <= 1e-6
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["lineage"][-1]["run_id"] == "dense" and prov["kind"] == "upcycle"
    bad = subprocess.run(base + ["--moe", '{"experts": 2, "top_k": 3}'], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "top_k" in bad.stderr and "Traceback" not in bad.stderr
