"""Standard (sp) and maximal-update (muP) parametrization: init scale, forward multipliers and Adam learning rates.

Why muP: under it the optimal learning rate and init scale found on a narrow "base" model carry over to
wider ones (Yang et al. 2022, "Tensor Programs V", arXiv 2203.03466), so a learning-rate sweep at the base
width serves every width of a grid. The width multiplier is ``m = d_model / mup_base_d_model``. Rules
(Adam; TP5 Table 3 for the router, the equivalent Table 8 "multiplier" form for the LM head):

    role                          init                       Adam lr   forward
    embedding (input)             N(0, init_std)             x 1       -
    lm_head, tied or not          N(0, init_std)             x 1       logits x 1/m
    hidden matrices               N(0, init_std / sqrt(m))   x 1/m     -
    router, shared-expert gate    N(0, init_std / m)         x 1/m     -
    norm gains, biases (vector)   ones / zeros               x 1       -
    attention                     -                          -         q.k x sqrt(b) / head_dim

SP here is this project's standard: N(0, init_std) for every matrix whatever its fan-in (GPT-2 / Qwen
style), 1/sqrt(head_dim) attention, one lr for all parameters.

* hidden matrices: q/k/v/o, the dense and shared-expert SwiGLU, and every routed expert's gate/up (fan-in
  d_model) and down (fan-in d_ff/G): both of their dimensions grow with width, so init variance ~ 1/fan_in and
  Adam lr ~ 1/fan_in. We assume every hidden width (d_ff, n_head x head_dim, d_ff/G) grows by the same factor
  m as d_model, so one factor serves all (a grid whose d_ff / d_model ratio drifts is slightly off muP).
  An expert sees only its share of the tokens, but muP's rules follow a matrix's dimensions, not its data,
  so experts are hidden matrices like the dense FFN they replace (and an upcycled copy keeps its rule).
* readout: the LM head uses the multiplier form (logits x 1/m, init and lr unchanged) because the embeddings
  are tied by default: the shared matrix must keep the input layer's width-independent init and lr, and only
  a forward multiplier on the output side can also make its readout role muP (as microsoft/mup's tied readout
  does). An untied head gets the same treatment, so tied and untied models follow one rule. With tying, the
  shared matrix's Adam update mixes the input-side gradient with the (1/m-scaled) readout gradient, as in
  microsoft/mup; a zero-initialised readout is only possible untied and is not offered.
* router (d_model -> E, E fixed) and the shared expert's sigmoid gate (d_model -> 1) are readouts of a wide
  input into a fixed number of logits, so they are output-like. They use the Table 3 form instead (init
  std / m, lr / m: for Adam, up to eps and weight decay, the same training as a 1/m forward multiplier) so
  that the layer stays a plain Linear: exports and the upcycling surgery need no extra factor, and router
  logits, z-loss and balancing statistics keep their meaning.
* attention: scores q.k / head_dim instead of q.k / sqrt(head_dim) (aligned q and k make q.k grow like
  head_dim once trained), written as ``sqrt(b) / head_dim`` with ``b = mup_base_head_dim`` (default
  mup_base_d_model / n_head) so that at the base head size it is exactly SP's ``1 / sqrt(head_dim)``.
* weight decay multiplies each group's lr (torch AdamW convention), so hidden matrices decay by lr/m x wd.

At ``m = 1`` and ``head_dim == b``, muP is SP bit for bit: every multiplier is exactly 1.0, the init stds are
the same floats (so the same draws from the same generator), SDPA gets its default scale, no logit
multiplication is done, and the optimizer gets SP's two groups (every lr multiplier is 1.0). Tested with
torch.equal on weights after training steps (tests/test_mup.py).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from stages.core.cli import UserError
from stages.model.config import ModelConfig, base_head_dim

Role = Literal["input", "readout", "hidden", "router", "vector"]

EMBEDDING = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"
ROUTER_SUFFIXES = (".mlp.gate.weight", ".mlp.shared_expert_gate.weight")


def width_multiplier(cfg: ModelConfig) -> float:
    """m = d_model / mup_base_d_model under muP; 1 under SP."""
    if cfg.parametrization == "sp":
        return 1.0
    return cfg.d_model / cfg.mup_base_d_model


def attention_scale(cfg: ModelConfig) -> float | None:
    """Softmax scale of q.k; None where it is SP's 1/sqrt(head_dim) (SDPA's default, so the same bits)."""
    if cfg.parametrization == "sp" or cfg.head_dim == base_head_dim(cfg):
        return None
    return math.sqrt(base_head_dim(cfg)) / cfg.head_dim


def output_multiplier(cfg: ModelConfig) -> float:
    """Factor on the logits: 1/m under muP (readout in the multiplier form), 1 under SP."""
    return 1.0 / width_multiplier(cfg)


def role(name: str, ndim: int) -> Role:
    """The muP role of a parameter, from its (Hugging Face style) name and number of dimensions."""
    if ndim < 2:
        return "vector"
    if name == EMBEDDING:
        return "input"
    if name == LM_HEAD:
        return "readout"
    if name.endswith(ROUTER_SUFFIXES):
        return "router"
    return "hidden"


def init_std(cfg: ModelConfig, name: str, ndim: int) -> float:
    """Standard deviation of the normal initialisation of a matrix (``init_std`` at the base width)."""
    m = width_multiplier(cfg)
    r = role(name, ndim)
    if r == "hidden" and m != 1.0:
        return cfg.init_std / math.sqrt(m)
    if r == "router" and m != 1.0:
        return cfg.init_std / m
    return cfg.init_std


def lr_multiplier(cfg: ModelConfig, name: str, ndim: int) -> float:
    """Factor on the schedule's lr for this parameter: 1/m for hidden matrices and routers under muP, else 1."""
    if role(name, ndim) in ("hidden", "router"):
        return 1.0 / width_multiplier(cfg)
    return 1.0


def decays(param: torch.Tensor) -> bool:
    """Weight decay applies to matrices (embeddings, projections, routers, experts), never to norms or biases."""
    return param.ndim >= 2


def optimizer_groups(model: nn.Module, cfg: ModelConfig, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay, norms and biases do not; each group carries its muP ``lr_mult``.

    Under SP this is exactly two groups, decaying matrices then the rest, in parameter order.
    """
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        key = (decays(p), lr_multiplier(cfg, name, p.ndim))
        groups.setdefault(key, []).append(p)
    order = sorted(groups, key=lambda k: (not k[0], -k[1]))
    return [{"params": groups[k], "weight_decay": weight_decay if k[0] else 0.0, "lr_mult": k[1]} for k in order]


def fold_for_export(cfg: ModelConfig, state: dict[str, torch.Tensor], target: str) -> dict[str, torch.Tensor]:
    """SP-equivalent tensors for a format that computes plain ``1/sqrt(head_dim)`` attention and unscaled logits.

    The muP attention scale becomes a factor ``sqrt(b / head_dim)`` on q_proj (weight and bias: RoPE is linear,
    so scaling q before it is the same); the 1/m on the logits goes into an untied ``lm_head``. A tied head
    cannot hold it (the embedding would change too), so that is an error. SP tensors are returned unchanged.
    """
    if cfg.parametrization == "sp":
        return state
    m = width_multiplier(cfg)
    if m != 1.0 and cfg.tie_embeddings:
        raise UserError(
            f"model.parametrization mup: {target} cannot express the 1/m = {1 / m:.4g} output multiplier of a tied "
            "embedding (d_model != mup_base_d_model); export a model trained with tie_embeddings false"
        )
    out = dict(state)
    scale = attention_scale(cfg)
    if scale is not None:
        q_factor = math.sqrt(base_head_dim(cfg) / cfg.head_dim)  # scale * sqrt(head_dim)
        for name, tensor in state.items():
            if ".self_attn.q_proj." in name:
                out[name] = tensor * q_factor
    if m != 1.0:
        out[LM_HEAD] = state[LM_HEAD] * (1.0 / m)
    return out
