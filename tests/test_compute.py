"""Parameter and FLOP counting agrees with the models it describes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_config
from torch.utils.flop_counter import FlopCounterMode

from stages.model import moe as moe_module
from stages.model.compute import flops_per_token, param_counts, run_flops, upcycled_total_flops
from stages.model.config import MoEConfig
from stages.model.moe import grouped_mm_loop
from stages.model.transformer import Transformer, cross_entropy, seed_generator

CASES = [
    dict(),
    dict(tie_embeddings=False),
    dict(qkv_bias=True, n_kv_head=2),
    dict(moe=MoEConfig(experts=4, top_k=2)),
    dict(moe=MoEConfig(experts=8, top_k=2, granularity=2, shared_expert_d_ff=32, layers=(1,))),
]


@pytest.mark.parametrize("case", CASES)
def test_counts_match_the_built_model(case):
    cfg = tiny_config(**case)
    model = Transformer(cfg)
    counts = param_counts(cfg)
    embedding_params = model.model.embed_tokens.weight.numel() + (0 if cfg.tie_embeddings else cfg.vocab_size * 32)
    assert counts.total(count_embeddings=True) == sum(p.numel() for p in model.parameters())
    assert counts.total() == sum(p.numel() for p in model.parameters()) - embedding_params


def test_active_counts_only_the_top_k_experts():
    dense = tiny_config()
    moe = tiny_config(MoEConfig(experts=8, top_k=2))
    d, m = param_counts(dense), param_counts(moe)
    per_layer_ffn = 3 * 32 * 64
    assert m.active() - d.total() == 2 * (per_layer_ffn + 8 * 32)  # one extra expert + router per layer
    assert m.total() - m.active() == 2 * 6 * per_layer_ffn  # 6 experts idle per layer
    # granularity keeps active FLOPs when top-k scales with G
    fine = tiny_config(MoEConfig(experts=16, top_k=4, granularity=2))
    assert param_counts(fine).experts_active == m.experts_active


@pytest.mark.parametrize("moe", [None, MoEConfig(experts=4, top_k=2), MoEConfig(experts=8, top_k=2, granularity=2)])
def test_6n_equals_the_matmul_flops_torch_counts(moe, monkeypatch):
    """The 6N convention against torch's own FLOP counter over one forward + backward pass.

    torch counts no FLOPs for the grouped expert matmul, so the experts run through the per-expert reference
    loop (plain ``mm``) here; attention score/value products are not in 6N and torch does not count them on
    this path either.
    """
    monkeypatch.setattr(moe_module, "grouped_mm", grouped_mm_loop)
    cfg = tiny_config(moe)
    model = Transformer(cfg)
    model.init_weights(seed_generator(0))
    batch = torch.randint(0, cfg.vocab_size, (2, 33), generator=seed_generator(1))
    with FlopCounterMode(display=False) as counter:
        out = model(batch[:, :-1])
        cross_entropy(out.logits, batch[:, 1:]).backward()
    tokens = batch[:, 1:].numel()
    assert counter.get_total_flops() == flops_per_token(cfg, 32) * tokens


def test_attention_convention_and_sunk_cost():
    cfg = tiny_config()
    # 6N+attn adds QK^T and AV: 2 matmuls x 2 FLOPs x seq_len x d_model per layer forward, x3 with backward,
    # counted without the causal discount (half of them are masked)
    assert flops_per_token(cfg, 32, "6N+attn") - flops_per_token(cfg, 32) == 3 * 2 * cfg.n_layer * 32 * cfg.d_model
    assert run_flops(cfg, 1000, 32) == 1000 * flops_per_token(cfg, 32)
    moe = dataclasses.replace(cfg, moe=MoEConfig(experts=4, top_k=2))
    total = upcycled_total_flops(cfg, 1000, moe, 500, 32)
    assert total == run_flops(cfg, 1000, 32) + run_flops(moe, 500, 32)
    assert flops_per_token(moe, 32) > flops_per_token(cfg, 32)  # top-2 of 4 experts: twice the FFN matmuls
    with pytest.raises(ValueError):
        flops_per_token(cfg, 32, "12N")
