"""Causal self-attention with rotary embeddings and optional grouped KV heads (Qwen2 math)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.model.config import ModelConfig
from stages.model.layers import apply_rotary
from stages.model.parametrization import attention_scale


class Attention(nn.Module):
    """Causal self-attention with optional grouped KV heads."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hd = cfg.head_dim
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, hd
        self.scale = attention_scale(cfg)  # None: 1/sqrt(head_dim); muP: sqrt(base head_dim)/head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_head * hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_head * hd, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        gqa = self.n_head != self.n_kv_head
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))
