"""Parameter and FLOP counting: the one place every table, fit and figure takes N and C from.

Conventions (recorded in every output that uses them):

* ``N`` counts non-embedding parameters (attention, feed-forward or experts, router, shared expert, norms).
  At the tiny scale of the default grid the embedding table is as large as the rest of the model, and
  non-embedding counts give cleaner laws (Kaplan et al. 2020). ``count_embeddings=True`` adds the input
  embedding and an untied output head.
* ``N_active`` counts what one token uses: attention, the top-k routed experts, the shared expert,
  the router and the dense layers. ``N_total`` counts every expert.
* Training FLOPs per token are ``6 x`` the active matmul parameters, including the output-head matmul
  (vocab x d_model, real compute even when tied) - convention ``6N``. ``6N+attn`` adds the attention
  score/value products, ``6 * n_layer * seq_len * d_model`` (Kaplan's ``2 n_layer n_ctx d_attn`` per
  forward pass, times three for the backward pass; causal masking not discounted).
* An upcycled run's total compute includes the sunk dense cost: ``6 N_dense D1 + 6 N_active D2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.model.config import ModelConfig

FLOP_CONVENTIONS = ("6N", "6N+attn")


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one model configuration, by role."""

    embedding: int  # input embedding table
    lm_head: int  # output head (0 when tied to the embedding)
    attention: int
    norms: int
    dense_ffn: int  # SwiGLU MLPs of dense layers
    experts_total: int  # all routed experts of MoE layers
    experts_active: int  # top-k routed experts per token
    router: int
    shared_expert: int  # shared experts and their gates

    def total(self, count_embeddings: bool = False) -> int:
        """N_total: every parameter (every expert)."""
        core = self.attention + self.norms + self.dense_ffn + self.experts_total + self.router + self.shared_expert
        return core + (self.embedding + self.lm_head if count_embeddings else 0)

    def active(self, count_embeddings: bool = False) -> int:
        """N_active: the parameters one token passes through."""
        core = self.attention + self.norms + self.dense_ffn + self.experts_active + self.router + self.shared_expert
        return core + (self.embedding + self.lm_head if count_embeddings else 0)


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Count parameters from the configuration alone (no model is built)."""
    d, hd = cfg.d_model, cfg.head_dim
    attn_bias = (cfg.n_head + 2 * cfg.n_kv_head) * hd if cfg.qkv_bias else 0
    attention = d * cfg.n_head * hd * 2 + d * cfg.n_kv_head * hd * 2 + attn_bias
    moe_layers = set(cfg.moe_layers())
    n_moe = len(moe_layers)
    n_dense = cfg.n_layer - n_moe
    experts_total = experts_active = router = shared = 0
    if cfg.moe is not None and n_moe:
        per_expert = 3 * d * cfg.expert_d_ff
        experts_total = n_moe * cfg.moe.experts * per_expert
        experts_active = n_moe * cfg.moe.top_k * per_expert
        router = n_moe * cfg.moe.experts * d
        if cfg.moe.shared_expert_d_ff:
            shared = n_moe * (3 * d * cfg.moe.shared_expert_d_ff + d)
    return ParamCounts(
        embedding=cfg.vocab_size * d,
        lm_head=0 if cfg.tie_embeddings else cfg.vocab_size * d,
        attention=cfg.n_layer * attention,
        norms=(2 * cfg.n_layer + 1) * d,
        dense_ffn=n_dense * 3 * d * cfg.d_ff,
        experts_total=experts_total,
        experts_active=experts_active,
        router=router,
        shared_expert=shared,
    )


def flops_per_token(cfg: ModelConfig, seq_len: int, convention: str = "6N") -> float:
    """Training FLOPs per token (forward + backward) under ``convention`` (see module docstring)."""
    if convention not in FLOP_CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {convention!r}; expected one of {FLOP_CONVENTIONS}")
    c = param_counts(cfg)
    matmul_active = c.active() - c.norms + cfg.vocab_size * cfg.d_model
    flops = 6.0 * matmul_active
    if convention == "6N+attn":
        flops += 6.0 * cfg.n_layer * seq_len * cfg.d_model
    return flops


def run_flops(cfg: ModelConfig, tokens: int, seq_len: int, convention: str = "6N") -> float:
    """FLOPs of training ``cfg`` on ``tokens`` tokens."""
    return flops_per_token(cfg, seq_len, convention) * float(tokens)


def upcycled_total_flops(
    dense: ModelConfig, d1: int, moe: ModelConfig, d2: int, seq_len: int, convention: str = "6N"
) -> float:
    """Total compute of an upcycled model, sunk dense cost included: C(dense, D1) + C(MoE, D2)."""
    return run_flops(dense, d1, seq_len, convention) + run_flops(moe, d2, seq_len, convention)
