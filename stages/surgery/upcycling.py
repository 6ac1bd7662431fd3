"""Upcycling: a dense model becomes an MoE model whose experts and router come from its FFN.

Attention, norms and embeddings are copied. Each MoE layer's experts come from the dense SwiGLU FFN:

* ``naive`` (Komatsuzaki et al.): expert j is the dense FFN (with granularity G > 1: shard j mod G of it,
  width d_ff/G), every router row drawn independently.
* ``virtual_group`` (He et al. / Megatron granular upcycling): shards as above, and the G experts of
  one group (j // G) share one router row, so top-k with k a multiple of G selects whole copies of the
  dense FFN.
* ``drop`` (Drop-Upcycling, Nakamura et al.): naive, then in every expert a random share ``drop_ratio`` of
  the intermediate neurons (rows of gate/up, columns of down) is re-drawn from N(mean, std) of the
  replaced slice of the original matrix. Drop-Upcycling's per-expert neuron permutation is omitted: it is
  a symmetry of both the expert function and AdamW, so it changes nothing but the layout.

Options for every method: Gaussian noise relative to each matrix's std; weight scaling by the factor
``a`` that restores the dense output scale under a uniform router (He et al. Eq. 2, Megatron):
``a = G`` with renormalised top-k, ``a = E*G/k`` without. ``scale_spread: down`` puts all of ``a`` on the
down projection (exact for any activation); ``megatron`` puts ``a^(1/3)`` on gate, up and down as Megatron
does (exact for squared-ReLU, only approximate for SwiGLU because silu is not homogeneous). Router init:
normal(0, std), zero-mean uniform with that std, or zeros (a router bias, if any, starts at zero). A shared
expert starts as the dense FFN (its first ``shared_expert_d_ff`` neurons) with a zero gate (sigmoid 0.5).
Optimizer state starts fresh.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from stages.core.cli import UserError
from stages.core.options import as_dict
from stages.model.config import MoEConfig
from stages.model.transformer import Transformer, seed_generator
from stages.surgery.recipe import UpcycleRecipe, check_compatible
from stages.training.evaluation import validation_loss


def scaling_factor(moe: MoEConfig) -> float:
    """Output-scale correction under a uniform router (He et al. Eq. 2, generalised as in Megatron)."""
    if moe.norm_topk_prob:
        return float(moe.granularity)
    return moe.experts * moe.granularity / moe.top_k


def init_router(
    experts: int, d_model: int, recipe: UpcycleRecipe, granularity: int, gen: torch.Generator
) -> torch.Tensor:
    """Router weight [E, d]; with virtual groups the G experts of a group share one row."""
    rows = experts // granularity if recipe.method == "virtual_group" else experts
    if recipe.router_init == "zeros":
        base = torch.zeros(rows, d_model)
    elif recipe.router_init == "uniform":
        half_width = recipe.router_std * math.sqrt(3.0)
        base = (torch.rand(rows, d_model, generator=gen) * 2.0 - 1.0) * half_width
    else:
        base = torch.randn(rows, d_model, generator=gen) * recipe.router_std
    if recipe.method == "virtual_group":
        return base[torch.arange(experts) // granularity].clone()
    return base


def _redraw(block: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Fresh values from N(mean, std) of the block being replaced."""
    std = float(block.std()) if block.numel() > 1 else 0.0
    return torch.randn(block.shape, generator=gen) * std + float(block.mean())


def drop_reinit(
    gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, ratio: float, shared: bool, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop-Upcycling: re-draw ``floor(ratio * width)`` neurons of one expert (rows of gate/up, cols of down)."""
    width = gate.shape[0]
    n = int(ratio * width)
    if n == 0:
        return gate, up, down
    gate, up, down = gate.clone(), up.clone(), down.clone()
    idx = torch.randperm(width, generator=gen)[:n]
    for which, matrix in enumerate((gate, up, down)):
        if not shared and which:
            idx = torch.randperm(width, generator=gen)[:n]
        if which < 2:
            matrix[idx, :] = _redraw(matrix[idx, :], gen)
        else:
            matrix[:, idx] = _redraw(matrix[:, idx], gen)
    return gate, up, down


def _noisy(w: torch.Tensor, rel_std: float, gen: torch.Generator) -> torch.Tensor:
    return w + torch.randn(w.shape, generator=gen) * (rel_std * float(w.std())) if rel_std > 0 else w


def upcycle(dense: Transformer, moe: MoEConfig, recipe: UpcycleRecipe, seed: int) -> Transformer:
    """Build the MoE model whose experts, router and shared expert come from ``dense`` by ``recipe``."""
    if dense.cfg.moe is not None:
        raise UserError("upcycle: the input checkpoint is already an MoE model")
    check_compatible(recipe, moe, dense.cfg.d_ff)
    cfg = dataclasses.replace(dense.cfg, moe=moe)
    model = Transformer(cfg)
    gen = seed_generator(seed)
    dense_sd = dense.state_dict()
    state = model.state_dict()
    for name in state:
        if name in dense_sd:
            state[name] = dense_sd[name].clone()
    factor = scaling_factor(moe)
    width = cfg.expert_d_ff
    for layer in cfg.moe_layers():
        src = f"model.layers.{layer}.mlp."
        gate, up, down = (dense_sd[src + f"{m}_proj.weight"] for m in ("gate", "up", "down"))
        gate_up, downs = [], []
        for j in range(moe.experts):
            shard = slice((j % moe.granularity) * width, (j % moe.granularity + 1) * width)
            g, u, d = gate[shard], up[shard], down[:, shard]
            if recipe.method == "drop":
                g, u, d = drop_reinit(g, u, d, recipe.drop_ratio, not recipe.drop_per_matrix_indices, gen)
            g, u, d = (_noisy(w, recipe.noise_std, gen) for w in (g, u, d))
            if recipe.scale_spread == "down":
                d = d * factor
            elif recipe.scale_spread == "megatron":
                s = factor ** (1.0 / 3.0)
                g, u, d = g * s, u * s, d * s
            gate_up.append(torch.cat([g, u], dim=0))
            downs.append(d)
        state[src + "experts.gate_up_proj"] = torch.stack(gate_up)
        state[src + "experts.down_proj"] = torch.stack(downs)
        state[src + "gate.weight"] = init_router(moe.experts, cfg.d_model, recipe, moe.granularity, gen)
        if moe.router_bias:
            state[src + "gate.bias"] = torch.zeros(moe.experts)
        if moe.shared_expert_d_ff:
            keep = slice(0, moe.shared_expert_d_ff)
            state[src + "shared_expert.gate_proj.weight"] = gate[keep].clone()
            state[src + "shared_expert.up_proj.weight"] = up[keep].clone()
            state[src + "shared_expert.down_proj.weight"] = down[:, keep].clone()
            state[src + "shared_expert_gate.weight"] = torch.zeros(1, cfg.d_model)
    model.load_state_dict(state)
    return model


@torch.no_grad()
def logit_comparison(dense: Transformer, moe: Transformer, batch: torch.Tensor) -> dict[str, float]:
    """How far the MoE's logits are from the dense model's on one batch (0 when the surgery preserves the function)."""
    a, b = dense(batch).logits.double(), moe(batch).logits.double()
    return {
        "max_abs_logit_diff": float((a - b).abs().max()),
        "max_rel_logit_diff": float((a - b).abs().max() / a.abs().max()),
        "logit_rms_ratio": float(b.pow(2).mean().sqrt() / a.pow(2).mean().sqrt()),
    }


def surgery_report(
    dense: Transformer, model: Transformer, recipe: UpcycleRecipe, windows: torch.Tensor, dense_path: str
) -> dict[str, Any]:
    """The step-0 validation loss of the MoE next to the dense model's, and how far their logits are apart."""
    assert model.cfg.moe is not None
    dense_loss = validation_loss(dense, windows)
    moe_loss = validation_loss(model, windows)
    return {
        "dense_checkpoint": dense_path,
        "dense_val_loss": dense_loss,
        "moe_val_loss": moe_loss,
        "delta_val_loss": moe_loss - dense_loss,
        "eval_tokens": int(windows.shape[0] * dense.cfg.max_seq_len),
        "scaling_factor": scaling_factor(model.cfg.moe) if recipe.scale_spread != "none" else 1.0,
        "recipe": as_dict(recipe),
        "moe": model.cfg.to_dict()["moe"],
        **logit_comparison(dense.eval(), model.eval(), windows[:4, :-1]),
    }
