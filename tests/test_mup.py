"""muP parametrization: the rules per parameter, m = 1 equals SP bit for bit, and the coordinate check."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, tiny_config

from stages.core.cli import UserError
from stages.core.record import RunRecord
from stages.model.checkpoint import load_model, save_checkpoint
from stages.model.config import ModelConfig, MoEConfig
from stages.model.parametrization import attention_scale, init_std, lr_multiplier, output_multiplier, role
from stages.model.transformer import Transformer, cross_entropy, seed_generator
from stages.training.optimizer import make_optimizer
from stages.training.options import TrainConfig

MOE = MoEConfig(experts=4, top_k=2, granularity=2, shared_expert_d_ff=32)


def build(cfg: ModelConfig, seed: int = 0) -> Transformer:
    model = Transformer(cfg)
    model.init_weights(seed_generator(seed))
    return model


def mup(cfg: ModelConfig, base: int, head: int = 0) -> ModelConfig:
    return dataclasses.replace(cfg, parametrization="mup", mup_base_d_model=base, mup_base_head_dim=head)


def train_steps(model: Transformer, steps: int = 4) -> list[torch.Tensor]:
    """The trainer's optimizer, lr setting, clipping and loss on a fixed random batch; the losses."""
    optimizer = make_optimizer(model, TrainConfig(lr=0.01))
    gen = torch.Generator().manual_seed(1)
    batch = torch.randint(0, model.cfg.vocab_size, (2, 17), generator=gen)
    losses = []
    for step in range(steps):
        optimizer.set_lr(0.01 * (step + 1) / steps)
        out = model(batch[:, :-1])
        loss = cross_entropy(out.logits, batch[:, 1:]) + 0.01 * out.aux_loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        optimizer.step()
        losses.append(loss.detach())
    return losses


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(moe=MOE, tie_embeddings=False, qkv_bias=True, n_kv_head=2)],
    ids=["dense_tied", "moe_untied_bias_gqa"],
)
def test_mup_at_the_base_width_is_sp_bit_for_bit(overrides):
    """m = 1 and head_dim = the base head_dim: same init draws, same forward, same Adam steps (torch.equal)."""
    sp_cfg = tiny_config(**overrides)
    mup_cfg = mup(sp_cfg, base=sp_cfg.d_model)
    assert attention_scale(mup_cfg) is None and output_multiplier(mup_cfg) == 1.0
    sp, mp = build(sp_cfg), build(mup_cfg)
    for (name, a), b in zip(sp.state_dict().items(), mp.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [float(x) for x in train_steps(sp)] == [float(x) for x in train_steps(mp)]
    for (name, a), b in zip(sp.state_dict().items(), mp.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_roles_init_and_lr_of_every_parameter():
    cfg = mup(tiny_config(moe=MOE, d_model=64, tie_embeddings=False, qkv_bias=True), base=16)  # m = 4
    model = build(cfg)
    roles = {name: role(name, p.ndim) for name, p in model.named_parameters()}
    assert roles["model.embed_tokens.weight"] == "input" and roles["lm_head.weight"] == "readout"
    assert roles["model.layers.0.mlp.gate.weight"] == "router"
    assert roles["model.layers.0.mlp.shared_expert_gate.weight"] == "router"
    for name in ("self_attn.q_proj.weight", "self_attn.o_proj.weight", "mlp.experts.gate_up_proj",
                 "mlp.experts.down_proj", "mlp.shared_expert.down_proj.weight"):  # fmt: skip
        assert roles[f"model.layers.1.{name}"] == "hidden", name
    assert roles["model.layers.0.self_attn.q_proj.bias"] == roles["model.norm.weight"] == "vector"
    expected_std = {"input": 0.02, "readout": 0.02, "hidden": 0.01, "router": 0.005}  # init_std, / sqrt(4), / 4
    expected_lr = {"input": 1.0, "readout": 1.0, "hidden": 0.25, "router": 0.25, "vector": 1.0}
    for name, p in model.named_parameters():
        assert lr_multiplier(cfg, name, p.ndim) == expected_lr[roles[name]], name
        if roles[name] != "vector":
            assert init_std(cfg, name, p.ndim) == pytest.approx(expected_std[roles[name]]), name
    drawn = model.model.layers[0].mlp.experts.gate_up_proj  # 4 x 64 x 64 draws: the std within 5 %
    assert float(drawn.detach().std()) == pytest.approx(0.01, rel=0.05)
    optimizer = make_optimizer(model, TrainConfig(lr=0.004, weight_decay=0.1))
    optimizer.set_lr(0.002)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        decay = 0.1 if p.ndim >= 2 else 0.0
        assert lr_of[id(p)] == (0.002 * expected_lr[roles[name]], decay), name


def test_sp_optimizer_groups_are_the_two_decay_groups():
    model = build(tiny_config(moe=MOE))
    groups = make_optimizer(model, TrainConfig()).param_groups
    assert [(g["weight_decay"], g["lr_mult"]) for g in groups] == [(0.1, 1.0), (0.0, 1.0)]
    assert [p for g in groups for p in g["params"]] == [
        *(p for p in model.parameters() if p.ndim >= 2),
        *(p for p in model.parameters() if p.ndim < 2),
    ]


def test_attention_uses_sqrt_base_head_dim_over_head_dim():
    cfg = mup(tiny_config(d_model=64, n_head=4), base=32)  # head_dim 16, base head_dim 8
    assert attention_scale(cfg) == math.sqrt(8) / 16
    assert attention_scale(mup(cfg, base=32, head=16)) is None  # at the base head size: SP's scale
    attn = build(cfg).model.layers[0].self_attn
    x = torch.randn(2, 5, 64)
    cos, sin = torch.ones(5, 16), torch.zeros(5, 16)  # no rotation: plain dot products
    q = attn.q_proj(x).view(2, 5, 4, 16).transpose(1, 2)
    k = attn.k_proj(x).view(2, 5, 4, 16).transpose(1, 2)
    v = attn.v_proj(x).view(2, 5, 4, 16).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) * math.sqrt(8) / 16
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    expected = attn.o_proj((F.softmax(scores, -1) @ v).transpose(1, 2).reshape(2, 5, 64))
    torch.testing.assert_close(attn(x, cos, sin), expected)


def test_logits_are_divided_by_the_width_multiplier():
    cfg = mup(tiny_config(), base=16, head=8)  # m = 2; head_dim 8 = base head_dim: SP attention
    model = build(cfg)
    twin = Transformer(dataclasses.replace(cfg, parametrization="sp"))
    twin.load_state_dict(model.state_dict())
    idx = torch.randint(0, cfg.vocab_size, (2, 9))
    assert torch.equal(model(idx).logits, twin(idx).logits * 0.5)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (dict(parametrization="mup"), "model.mup_base_d_model"),
        (dict(parametrization="mup", mup_base_d_model=6), "model.mup_base_head_dim"),  # n_head 4
        (dict(parametrization="mu"), "model.parametrization"),
        (dict(mup_base_d_model=-1), "model.mup_base_d_model"),
    ],
)
def test_invalid_mup_settings_name_the_key(overrides, key):
    with pytest.raises(UserError, match=key):
        tiny_config(**overrides)


def test_config_json_carries_the_parametrization(tmp_path):
    cfg = mup(tiny_config(moe=MOE), base=16)
    model = build(cfg)
    save_checkpoint(tmp_path, model, RunRecord(run_id="r", kind="scratch_moe", code_hash="", torch_version=""))
    written = json.loads((tmp_path / "config.json").read_text())
    assert (written["parametrization"], written["mup_base_d_model"], written["mup_base_head_dim"]) == ("mup", 16, 0)
    loaded, _ = load_model(tmp_path)
    assert loaded.cfg == cfg
    idx = torch.randint(0, cfg.vocab_size, (1, 7))
    assert torch.equal(loaded(idx).logits, model(idx).logits)
    old = {k: v for k, v in written.items() if not k.startswith(("parametrization", "mup_"))}
    assert ModelConfig.from_dict(old).parametrization == "sp"  # checkpoints written before muP existed


def _coord_check():
    spec = importlib.util.spec_from_file_location("mup_coord_check", REPO / "bench" / "mup_coord_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_coordinate_check_is_flat_under_mup_and_grows_under_sp(moe):
    """microsoft/mup's check: mean |activation| after 3 Adam steps against width 32..256, slope in log-log.

    Under muP the last hidden state and the logits stay within a slope of -0.4..+0.15 (slightly negative at
    these widths: the init part of the logits shrinks like 1/sqrt(m) and the update's random part has not yet
    averaged out), under SP they grow (slopes about 2 and 0.8); the router, muP's output-like matrix inside
    the network, must not grow either.
    """
    torch.set_num_threads(1)
    cc = _coord_check()
    setup = cc.Setup(moe=moe)
    sizes = {p: cc.coord_sizes(setup, p) for p in ("sp", "mup")}
    slopes = {(p, q): cc.slope(sizes[p], setup.widths, setup.steps, q) for p in sizes for q in ("hidden", "logits")}
    print({k: round(v, 2) for k, v in slopes.items()})
    assert -0.4 <= slopes["mup", "hidden"] <= 0.15 and -0.4 <= slopes["mup", "logits"] <= 0.15
    assert slopes["sp", "hidden"] >= 1.0 and slopes["sp", "logits"] >= 0.5
    if moe:
        assert -0.6 <= cc.slope(sizes["mup"], setup.widths, setup.steps, "router") <= 0.15
        assert cc.slope(sizes["sp"], setup.widths, setup.steps, "router") >= 0.5
