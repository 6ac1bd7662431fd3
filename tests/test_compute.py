"""Parameter and FLOP counting agrees with the models it describes."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import tiny_config

from stages.model.compute import flops_per_token, param_counts, run_flops, upcycled_total_flops
from stages.model.config import MoEConfig
from stages.model.transformer import Transformer

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


def test_flops_conventions_and_sunk_cost():
    cfg = tiny_config()
    c = param_counts(cfg)
    expected = 6 * (c.active() - c.norms + cfg.vocab_size * cfg.d_model)
    assert flops_per_token(cfg, 32) == expected
    assert flops_per_token(cfg, 32, "6N+attn") == expected + 6 * cfg.n_layer * 32 * cfg.d_model
    assert run_flops(cfg, 1000, 32) == 1000 * expected
    moe = dataclasses.replace(cfg, moe=MoEConfig(experts=4, top_k=2))
    total = upcycled_total_flops(cfg, 1000, moe, 500, 32)
    assert total == run_flops(cfg, 1000, 32) + run_flops(moe, 500, 32)
    with pytest.raises(ValueError):
        flops_per_token(cfg, 32, "12N")
