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
from dataclasses import dataclass

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


def router_logits(x: torch.Tensor, router: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Router logits [T, E] of tokens ``x`` [T, d] (plus the optional router bias [E]), always in fp32 (outside
    autocast)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.linear(at_least_fp32(x), at_least_fp32(router), None if bias is None else at_least_fp32(bias))


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


def expert_ffn(
    xs: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, offs: torch.Tensor, mm=grouped_mm
) -> torch.Tensor:
    """SwiGLU expert g on the rows of ``xs`` in group g (rows sorted by expert); weights in Hugging Face layout,
    ``gate_up`` [E, 2F, d] (gate rows first) and ``down`` [E, d, F]."""
    width = down.shape[-1]
    # split the weight, not the activations: the backward of a weight slice is tiny, while chunking the
    # [tokens, 2F] activations would concatenate their gradients (a copy as large as the layer's output)
    gate = mm(xs, gate_up[:, :width].transpose(-2, -1), offs)
    up = mm(xs, gate_up[:, width:].transpose(-2, -1), offs)
    return mm(F.silu(gate) * up, down.transpose(-2, -1), offs)


class Experts(nn.Module):
    """E SwiGLU experts stored as 3-D tensors in Hugging Face layout (out, in) per expert."""

    def __init__(self, experts: int, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(experts, 2 * d_ff, d_model))
        self.down_proj = nn.Parameter(torch.empty(experts, d_model, d_ff))

    def forward(self, xs: torch.Tensor, offs: torch.Tensor, mm=grouped_mm) -> torch.Tensor:
        """Apply expert g to the rows of ``xs`` in group g (rows sorted by expert)."""
        return expert_ffn(xs, self.gate_up_proj, self.down_proj, offs, mm)


@dataclass
class Mixture:
    """The routed experts' output for a batch of tokens, with the router losses and statistics of the pass."""

    out: torch.Tensor  # [tokens, d_model]
    aux_loss: torch.Tensor  # Switch balancing loss E * sum_e f_e * P_e
    z_loss: torch.Tensor  # router z-loss: mean squared logsumexp of the router logits
    stats: dict[str, torch.Tensor]


def capacity(capacity_factor: float, n_tokens: int, top_k: int, experts: int) -> int:
    """Slots per expert; 0 means dropless."""
    if capacity_factor <= 0:
        return 0
    return max(1, math.ceil(capacity_factor * n_tokens * top_k / experts))


def mixture(
    x: torch.Tensor,
    router: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    top_k: int,
    norm_topk_prob: bool,
    capacity_factor: float,
    mm=grouped_mm,
    router_bias: torch.Tensor | None = None,
) -> Mixture:
    """Route the tokens ``x`` [T, d] with the fp32 router weight [E, d] (and bias [E], if the model has one) and
    run the experts (weights as in :func:`expert_ffn`). One definition of the routed layer for every backend: our
    MoE layer and the nanotron backend's model class both call it."""
    n, k, e = x.shape[0], top_k, router.shape[0]
    logits = router_logits(x, router, router_bias)
    weights, experts, probs = route(logits, k, norm_topk_prob)

    flat_expert = experts.reshape(-1)
    flat_weight = weights.reshape(-1)
    counts = torch.bincount(flat_expert, minlength=e)
    cap = capacity(capacity_factor, n, k, e)
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
    ys = expert_ffn(xs, gate_up, down, offs, mm) * flat_weight[order, None].to(x.dtype)
    slots = x.new_zeros(n * k, x.shape[-1])
    slots = slots.index_put((order,), ys)
    out = slots.view(n, k, -1).sum(dim=1)

    fractions = counts.float() / (n * k)
    stats = {
        "expert_fraction": fractions.detach(),
        "drop_rate": (1.0 - kept.sum().float() / (n * k)).detach(),
        **router_health_stats(counts, n * k),
    }
    aux_loss = e * torch.sum(fractions * probs.mean(dim=0))
    z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
    return Mixture(out, aux_loss, z_loss, stats)


class MoELayer(nn.Module):
    """Routed SwiGLU experts (+ optional sigmoid-gated shared expert), Hugging Face Qwen2-MoE names."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        moe = cfg.moe
        assert moe is not None
        self.n_experts, self.top_k = moe.experts, moe.top_k
        self.norm_topk_prob = moe.norm_topk_prob
        self.capacity_factor = moe.capacity_factor
        # the router, always run in fp32; its bias (moe.router_bias) holds expert expansion's -ln(copies) offset
        self.gate = nn.Linear(cfg.d_model, moe.experts, bias=moe.router_bias)
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
        return router_logits(x, self.gate.weight, self.gate.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        mix = mixture(
            x,
            self.gate.weight,
            self.experts.gate_up_proj,
            self.experts.down_proj,
            self.top_k,
            self.norm_topk_prob,
            self.capacity_factor,
            self.mm,
            self.gate.bias,
        )
        out = mix.out
        if self.shared_expert is not None and self.shared_expert_gate is not None:
            out = out + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        self.last_aux_loss, self.last_z_loss, self.last_stats = mix.aux_loss, mix.z_loss, mix.stats
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
