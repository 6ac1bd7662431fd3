"""The transformer: shapes, parameter names, gradients, determinism."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from stages.core.cli import UserError
from stages.model.config import ModelConfig, MoEConfig
from stages.model.layers import apply_rotary, rotary_cos_sin
from stages.model.transformer import Transformer, cross_entropy, seed_generator


def build(cfg: ModelConfig, seed: int = 0) -> Transformer:
    model = Transformer(cfg)
    model.init_weights(seed_generator(seed))
    return model


@pytest.mark.parametrize("moe", [None, MoEConfig(experts=4, top_k=2), MoEConfig(experts=4, top_k=1, layers=(1,))])
def test_forward_shapes_and_hf_names(moe):
    cfg = tiny_config(moe)
    model = build(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 17))
    out = model(idx)
    assert out.logits.shape == (3, 17, cfg.vocab_size)
    names = set(model.state_dict())
    assert "model.embed_tokens.weight" in names and "model.norm.weight" in names
    assert "model.layers.0.self_attn.q_proj.weight" in names
    if moe is None:
        assert "model.layers.1.mlp.gate_proj.weight" in names
        assert float(out.aux_loss) == 0.0
    else:
        assert "model.layers.1.mlp.experts.gate_up_proj" in names
        assert model.state_dict()["model.layers.1.mlp.experts.gate_up_proj"].shape == (4, 2 * cfg.d_ff, cfg.d_model)
        assert len(out.router_stats) == len(cfg.moe_layers())
        assert float(out.aux_loss.detach()) > 0.0


def test_causal_outputs_do_not_depend_on_future_tokens():
    cfg = tiny_config(MoEConfig(experts=4, top_k=2))
    model = build(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % cfg.vocab_size
    a, b = model(idx).logits, model(changed).logits
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_rotary_is_a_rotation_of_pairs():
    cfg = tiny_config()
    cos, sin = rotary_cos_sin(cfg, 10, torch.device("cpu"))
    x = torch.randn(1, 1, 10, cfg.head_dim)
    y = apply_rotary(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :])  # position 0 is not rotated


@pytest.mark.parametrize("moe", [None, MoEConfig(experts=3, top_k=2)])
def test_gradient_matches_finite_differences_in_float64(moe):
    cfg = tiny_config(moe, n_layer=1, d_model=16, n_head=2, d_ff=16, vocab_size=20)
    model = build(cfg).double()
    idx = torch.randint(0, cfg.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))

    def loss() -> torch.Tensor:
        out = model(idx[:, :-1])
        return cross_entropy(out.logits, idx[:, 1:]) + 0.5 * out.aux_loss

    loss().backward()
    params = dict(model.named_parameters())
    names = ["model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight", "model.norm.weight"]
    names += (
        ["model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.gate.weight"]
        if moe
        else ["model.layers.0.mlp.up_proj.weight"]
    )
    eps = 1e-6
    for name in names:
        p = params[name]
        flat, grad = p.data.view(-1), p.grad.view(-1)
        for i in (0, flat.numel() // 2, flat.numel() - 1):
            original = float(flat[i])
            with torch.no_grad():
                flat[i] = original + eps
                plus = float(loss())
                flat[i] = original - eps
                minus = float(loss())
                flat[i] = original
            numeric = (plus - minus) / (2 * eps)
            assert abs(numeric - float(grad[i])) < 1e-7 + 1e-5 * abs(numeric), (name, i, numeric, float(grad[i]))


def test_same_seed_same_weights_different_seed_different_weights():
    cfg = tiny_config()
    a, b, c = build(cfg, 1), build(cfg, 1), build(cfg, 2)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.equal(a.state_dict()["model.embed_tokens.weight"], c.state_dict()["model.embed_tokens.weight"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"n_layer": 0}, "n_layer"),
        ({"n_head": 5}, "n_head"),
        ({"n_kv_head": 3}, "n_kv_head"),
        ({"vocab_size": (1 << 32) + 1}, "vocab_size"),  # ids past uint32 fit no token shard
    ],
)
def test_invalid_shapes_name_the_key(overrides, key):
    with pytest.raises(UserError, match=key):
        tiny_config(**overrides)


@pytest.mark.parametrize(
    ("moe", "key"),
    [
        (dict(experts=2, top_k=3), "top_k"),
        (dict(experts=4, top_k=2, granularity=3), "granularity"),
        (dict(experts=4, top_k=2, aux_loss_coef=-1.0), "aux_loss_coef"),
        (dict(experts=4, top_k=2, layers=(5,)), "layers"),
        (dict(experts=4, top_k=1, norm_topk_prob=True), "norm_topk_prob"),
    ],
)
def test_invalid_moe_names_the_key(moe, key):
    with pytest.raises(UserError, match=key):
        tiny_config(MoEConfig(**moe))


def test_grouped_kv_heads_run():
    cfg = tiny_config(n_head=4, n_kv_head=2)
    out = build(cfg)(torch.randint(0, cfg.vocab_size, (1, 5)))
    assert torch.isfinite(out.logits).all()
