"""The dense and MoE decoder-only transformer, one definition for every backend.

The math matches Hugging Face Qwen2 / Qwen2-MoE (and nanotron's Qwen2) so that exports are renames:
pre-norm RMSNorm, rotary embeddings in the non-interleaved ``rotate_half`` layout, multi-head attention
with optional grouped KV heads and optional q/k/v bias, SwiGLU feed-forward, tied or untied embeddings.
Parameter names equal the Hugging Face state-dict keys (``model.layers.0.mlp.gate_proj.weight`` ...).
A layer listed in ``moe.layers`` uses :class:`stages.model.moe.MoELayer` instead of the dense SwiGLU MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stages.model.attention import Attention
from stages.model.config import ModelConfig
from stages.model.layers import MLP, RMSNorm, at_least_fp32, rotary_cos_sin
from stages.model.loss import cross_entropy as fused_cross_entropy
from stages.model.moe import MoELayer
from stages.model.parametrization import init_std, output_multiplier


class Block(nn.Module):
    """Pre-norm residual block: attention, then a dense or MoE feed-forward."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.is_moe = layer in cfg.moe_layers()
        self.mlp: nn.Module = MoELayer(cfg) if self.is_moe else MLP(cfg.d_model, cfg.d_ff)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """Embeddings, blocks and the final norm (Hugging Face's ``model.`` prefix)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)


@dataclass
class Output:
    """Logits plus the router losses and statistics of this forward pass."""

    logits: torch.Tensor
    aux_loss: torch.Tensor  # Switch balancing loss, mean over MoE layers (0 for dense)
    z_loss: torch.Tensor  # router z-loss, mean over MoE layers (0 for dense)
    router_stats: list[dict[str, torch.Tensor]]  # per MoE layer: expert fractions, drop rate


class Transformer(nn.Module):
    """Decoder-only language model; dense when ``cfg.moe`` is None."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.logit_multiplier = output_multiplier(cfg)  # muP readout: 1/m (1.0 under SP: not applied)
        cos, sin = rotary_cos_sin(cfg, cfg.max_seq_len, torch.device("cpu"))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def init_weights(self, generator: torch.Generator) -> None:
        """Draw every weight from ``generator``: N(0, std) for matrices (init_std, or its muP scaling: see
        :func:`stages.model.parametrization.init_std`), ones for norms, zeros for biases."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    p.fill_(1.0)
                elif name.endswith(".bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, init_std(self.cfg, name, p.ndim), generator=generator)

    def forward(self, idx: torch.Tensor) -> Output:
        b, t = idx.shape
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len={self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.model.embed_tokens(idx)
        aux, z, stats = [], [], []
        for block in self.model.layers:
            x = block(x, cos, sin)
            if block.is_moe:
                aux.append(block.mlp.last_aux_loss)
                z.append(block.mlp.last_z_loss)
                stats.append(block.mlp.last_stats)
        logits = self.lm_head(self.model.norm(x))
        if self.logit_multiplier != 1.0:
            logits = logits * self.logit_multiplier
        zero = logits.new_zeros((), dtype=torch.float32)
        aux_loss = torch.stack(aux).mean() if aux else zero
        z_loss = torch.stack(z).mean() if z else zero
        return Output(logits, aux_loss, z_loss, stats)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in nats, computed in fp32 (fused softmax gradient: stages/model/loss.py)."""
    return fused_cross_entropy(at_least_fp32(logits), targets)


def seed_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed) % (2**63))
    return g
