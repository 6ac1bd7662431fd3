"""The mixture-of-experts feed-forward layer: fp32 router, grouped expert dispatch, balancing losses.

Routing is softmax over all experts then top-k; ``norm_topk_prob`` renormalises the k selected weights,
which is the same function as "top-k then softmax" (Mixtral / Megatron default), so one code path
serves both orders. Dispatch sorts the (token, expert) assignments by expert and runs one grouped
matmul per weight (``torch._grouped_mm``, CPU and CUDA) instead of a Python loop over experts; the
combine step writes each assignment to its own slot and sums the k slots of a token, which is
deterministic on every device (no scatter-add).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stages.model.config import ModelConfig
from stages.model.layers import MLP, at_least_fp32


def route(logits: torch.Tensor, top_k: int, norm_topk_prob: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax over experts, then top-k; returns (weights [T,k], experts [T,k], probs [T,E]) in fp32."""
    probs = torch.softmax(at_least_fp32(logits), dim=-1)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts, probs


def _aligned(t: torch.Tensor) -> bool:
    """torch._grouped_mm needs 16-byte aligned strides (last dim contiguous)."""
    size = t.element_size()
    return all((s * size) % 16 == 0 for s, n in zip(t.stride(), t.shape, strict=True) if s != 1 and n > 1)


def grouped_mm_loop(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Reference grouped matmul: rows offs[g-1]:offs[g] of ``x`` times ``w[g]`` (one mm per group)."""
    out = x.new_empty(x.shape[0], w.shape[-1])
    start = 0
    for g, end in enumerate(offs.tolist()):
        out[start:end] = x[start:end] @ w[g]
        start = end
    return out


def grouped_mm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Grouped matmul ``x[rows of g] @ w[g]``; one fused kernel when shapes and dtype allow it."""
    if x.dtype in (torch.float32, torch.bfloat16, torch.float16) and _aligned(x) and _aligned(w):
        return torch._grouped_mm(x, w, offs=offs)
    return grouped_mm_loop(x, w, offs)


class Experts(nn.Module):
    """E SwiGLU experts stored as 3-D tensors in Hugging Face layout (out, in) per expert."""

    def __init__(self, experts: int, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(experts, 2 * d_ff, d_model))
        self.down_proj = nn.Parameter(torch.empty(experts, d_model, d_ff))

    def forward(self, xs: torch.Tensor, offs: torch.Tensor, mm=grouped_mm) -> torch.Tensor:
        """Apply expert g to the rows of ``xs`` in group g (rows sorted by expert)."""
        width = self.down_proj.shape[-1]
        # split the weight, not the activations: the backward of a weight slice is tiny, while chunking the
        # [tokens, 2F] activations would concatenate their gradients (a copy as large as the layer's output)
        gate = mm(xs, self.gate_up_proj[:, :width].transpose(-2, -1), offs)
        up = mm(xs, self.gate_up_proj[:, width:].transpose(-2, -1), offs)
        return mm(F.silu(gate) * up, self.down_proj.transpose(-2, -1), offs)


class MoELayer(nn.Module):
    """Routed SwiGLU experts (+ optional sigmoid-gated shared expert), Hugging Face Qwen2-MoE names."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        moe = cfg.moe
        assert moe is not None
        self.n_experts, self.top_k = moe.experts, moe.top_k
        self.norm_topk_prob = moe.norm_topk_prob
        self.capacity_factor = moe.capacity_factor
        self.gate = nn.Linear(cfg.d_model, moe.experts, bias=False)  # the router; always run in fp32
        self.experts = Experts(moe.experts, cfg.d_model, cfg.expert_d_ff)
        self.shared_expert: MLP | None = None
        self.shared_expert_gate: nn.Linear | None = None
        if moe.shared_expert_d_ff > 0:
            self.shared_expert = MLP(cfg.d_model, moe.shared_expert_d_ff)
            self.shared_expert_gate = nn.Linear(cfg.d_model, 1, bias=False)
        self.last_aux_loss = torch.zeros(())
        self.last_z_loss = torch.zeros(())
        self.last_stats: dict[str, torch.Tensor] = {}
        self.mm = grouped_mm

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.linear(at_least_fp32(x), at_least_fp32(self.gate.weight))

    def capacity(self, n_tokens: int) -> int:
        """Slots per expert; 0 means dropless."""
        if self.capacity_factor <= 0:
            return 0
        return max(1, math.ceil(self.capacity_factor * n_tokens * self.top_k / self.n_experts))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        n, k, e = x.shape[0], self.top_k, self.n_experts
        logits = self.router_logits(x)
        weights, experts, probs = route(logits, k, self.norm_topk_prob)

        flat_expert = experts.reshape(-1)
        flat_weight = weights.reshape(-1)
        counts = torch.bincount(flat_expert, minlength=e)
        cap = self.capacity(n)
        if cap:
            # within each expert, keep the `cap` assignments with the highest router probability
            key = flat_expert.double() * 2.0 - flat_weight.detach().double()
            order = torch.argsort(key, stable=True)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(n * k, device=x.device) - starts[flat_expert[order]]
            order = order[rank < cap]
            kept = counts.clamp(max=cap)
        else:
            order = torch.argsort(flat_expert, stable=True)
            kept = counts
        offs = torch.cumsum(kept, 0).to(torch.int32)

        xs = x[order // k]
        ys = self.experts(xs, offs, self.mm) * flat_weight[order, None].to(x.dtype)
        slots = x.new_zeros(n * k, shape[-1])
        slots = slots.index_put((order,), ys)
        out = slots.view(n, k, -1).sum(dim=1)

        if self.shared_expert is not None and self.shared_expert_gate is not None:
            out = out + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)

        fractions = counts.float() / (n * k)
        self.last_aux_loss = e * torch.sum(fractions * probs.mean(dim=0))
        self.last_z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        self.last_stats = {
            "expert_fraction": fractions.detach(),
            "drop_rate": (1.0 - kept.sum().float() / (n * k)).detach(),
            **router_health_stats(counts, n * k),
        }
        return out.view(shape)


@torch.no_grad()
def router_health_stats(counts: torch.Tensor, assignments: int) -> dict[str, torch.Tensor]:
    """Dead-expert share and tokens per expert of one step, from the routed counts (before capacity drops).

    Reads ``counts`` only (an integer tensor outside the autograd graph), so the training math is untouched.
    """
    return {
        "dead_share": (counts == 0).float().mean(),  # experts that received no token in this step
        "tokens_per_expert": torch.tensor(assignments / counts.numel()),  # mean assignments per expert, n*k/E
        "min_expert_tokens": counts.min(),
    }
