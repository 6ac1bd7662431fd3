"""The MoE layer: routing orders, grouped dispatch, capacity, balancing losses."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import tiny_config

from stages.core.cli import UserError
from stages.model.config import MoEConfig
from stages.model.moe import MoELayer, grouped_mm, grouped_mm_loop, route
from stages.model.transformer import Transformer, cross_entropy, seed_generator


def layer(**moe) -> MoELayer:
    cfg = tiny_config(MoEConfig(**{"experts": 4, "top_k": 2, **moe}))
    m = MoELayer(cfg)
    g = seed_generator(0)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3, generator=g)
    return m


def test_renormalised_softmax_then_topk_equals_topk_then_softmax():
    logits = torch.randn(50, 6)
    weights, experts, _ = route(logits, 2, norm_topk_prob=True)
    top_logits, top_idx = torch.topk(logits, 2, dim=-1)
    torch.testing.assert_close(weights, torch.softmax(top_logits, dim=-1))
    assert torch.equal(experts, top_idx)
    unnormalised, _, probs = route(logits, 2, norm_topk_prob=False)
    assert torch.all(unnormalised.sum(-1) < 1.0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(50))


def test_grouped_dispatch_equals_per_expert_reference():
    """Outputs and gradients of the grouped path equal an explicit loop over tokens and experts."""
    m = layer(experts=4, top_k=2, norm_topk_prob=False)
    x = torch.randn(3, 5, 32, requires_grad=True)
    y = m(x)
    flat = x.detach().reshape(-1, 32)
    weights, experts, _ = route(m.router_logits(flat), 2, False)
    ref = torch.zeros_like(flat)
    gu, down = m.experts.gate_up_proj.detach(), m.experts.down_proj.detach()
    for t in range(flat.shape[0]):
        for slot in range(2):
            e = int(experts[t, slot])
            gate, up = (gu[e] @ flat[t]).chunk(2)
            ref[t] += weights[t, slot] * (down[e] @ (torch.nn.functional.silu(gate) * up))
    torch.testing.assert_close(y.detach().reshape(-1, 32), ref, rtol=1e-4, atol=1e-5)

    m.mm = grouped_mm_loop
    x2 = x.detach().clone().requires_grad_(True)
    y2 = m(x2)
    y.pow(2).sum().backward()
    y2.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)


def test_grouped_mm_handles_empty_groups_and_unaligned_shapes():
    x = torch.randn(7, 8)
    w = torch.randn(3, 8, 5)  # output width 5: not 16-byte aligned -> reference path
    offs = torch.tensor([3, 3, 7], dtype=torch.int32)
    out = grouped_mm(x, w, offs)
    torch.testing.assert_close(out[:3], x[:3] @ w[0])
    torch.testing.assert_close(out[3:], x[3:] @ w[2])
    w8 = torch.randn(3, 8, 8)
    torch.testing.assert_close(grouped_mm(x, w8, offs), grouped_mm_loop(x, w8, offs))


def test_switch_aux_loss_is_one_when_balanced_and_larger_when_not():
    m = layer(experts=4, top_k=1)
    with torch.no_grad():
        m.gate.weight.zero_()
    m(torch.randn(64, 32))
    # uniform router probabilities: aux = E * sum_i f_i * (1/E) = 1 whatever the assignment
    torch.testing.assert_close(m.last_aux_loss, torch.tensor(1.0))
    with torch.no_grad():
        m.gate.weight.zero_()
        m.gate.weight[0] = 5.0  # every token prefers expert 0 (for positive inputs)
    m(torch.rand(64, 32))
    assert float(m.last_aux_loss.detach()) > 3.0
    assert float(m.last_stats["expert_fraction"][0]) == 1.0
    assert float(m.last_z_loss.detach()) > 0.0


def test_aux_loss_gradient_reaches_the_router():
    m = layer(experts=4, top_k=2)
    m(torch.randn(16, 32))
    m.last_aux_loss.backward()
    assert m.gate.weight.grad is not None and float(m.gate.weight.grad.abs().sum()) > 0


def test_capacity_factor_drops_lowest_probability_assignments():
    m = layer(experts=4, top_k=1, capacity_factor=1.0)
    with torch.no_grad():
        m.gate.weight.zero_()
        m.gate.weight[0] = 0.1
    x = torch.rand(40, 32) + 0.1  # all tokens route to expert 0; capacity = 40 * 1 / 4 = 10
    y = m(x)
    assert abs(float(m.last_stats["drop_rate"]) - 0.75) < 1e-6
    kept = (y.abs().sum(-1) > 0).nonzero().flatten()
    assert len(kept) == 10
    probs = torch.softmax(m.router_logits(x), -1)[:, 0]
    assert set(kept.tolist()) == set(torch.topk(probs, 10).indices.tolist())
    dropless = layer(experts=4, top_k=1)
    dropless(x)
    assert float(dropless.last_stats["drop_rate"]) == 0.0


def test_shared_expert_adds_a_gated_dense_path():
    m = layer(experts=4, top_k=2, shared_expert_d_ff=16)
    x = torch.randn(6, 32)
    with_shared = m(x)
    shared = torch.sigmoid(m.shared_expert_gate(x)) * m.shared_expert(x)
    m.shared_expert = None
    torch.testing.assert_close(with_shared - m(x), shared)


def test_dropless_routing_is_per_token():
    """Shuffling the tokens shuffles the outputs: dispatch, grouped matmuls and combine put every row back."""
    m = layer(experts=4, top_k=2, shared_expert_d_ff=16)
    x = torch.randn(37, 32, generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(37, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(m(x[perm]), m(x)[perm], rtol=0, atol=1e-6)


# capacity 1.0 drops assignments in every layer of this tiny batch (1.25 barely does), so dropping is covered
ROUTINGS = [
    dict(top_k=k, norm_topk_prob=norm, granularity=g, shared_expert_d_ff=shared, capacity_factor=cap)
    for k, norm, g, shared, cap in itertools.product((1, 2), (False, True), (1, 2), (0, 16), (0.0, 1.0, 1.25))
]
ACCEPTED = [r for r in ROUTINGS if not (r["top_k"] == 1 and r["norm_topk_prob"])]
REFUSED = [r for r in ROUTINGS if r["top_k"] == 1 and r["norm_topk_prob"]]


def routing_id(routing: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in routing.items())


def router_grads_from_cross_entropy(
    moe: MoEConfig, renormalise_anyway: bool = False
) -> tuple[list[float], list[float]]:
    """|grad| of each MoE layer's router weight from the language-model loss alone (no aux, no z loss), and
    each layer's drop rate."""
    model = Transformer(tiny_config(moe))
    model.init_weights(seed_generator(0))
    if renormalise_anyway:  # the refused routing, built past validation to measure what it would do
        for block in model.model.layers:
            block.mlp.norm_topk_prob = True
    idx = torch.randint(0, 96, (4, 24), generator=torch.Generator().manual_seed(1))
    out = model(idx[:, :-1])
    cross_entropy(out.logits, idx[:, 1:]).backward()
    grads = [float(block.mlp.gate.weight.grad.norm()) for block in model.model.layers]
    return grads, [float(s["drop_rate"]) for s in out.router_stats]


@pytest.mark.parametrize("routing", ACCEPTED, ids=routing_id)
def test_every_accepted_routing_trains_its_router_from_the_language_model_loss(routing):
    grads, drops = router_grads_from_cross_entropy(MoEConfig(experts=4, **routing))
    assert all(g > 1e-5 for g in grads), grads  # measured 3.8e-4 .. 1.8e-3
    if routing["capacity_factor"] == 1.0:
        assert all(d > 0 for d in drops), drops


@pytest.mark.parametrize("routing", REFUSED, ids=routing_id)
def test_renormalised_top1_is_refused_and_would_leave_the_router_untrained(routing):
    with pytest.raises(UserError, match="moe.norm_topk_prob") as info:
        tiny_config(MoEConfig(experts=4, **routing))
    assert "\n" not in str(info.value)
    plain = MoEConfig(experts=4, **{**routing, "norm_topk_prob": False})
    grads, _ = router_grads_from_cross_entropy(plain, renormalise_anyway=True)
    # the weight w / w is 1 up to rounding: measured 6e-11 .. 1.3e-10, seven orders below any accepted routing
    assert all(g < 1e-8 for g in grads), grads
