"""Expert expansion ("expert upcycling", Dwivedi et al. 2026): a trained E-expert MoE becomes an m x E-expert MoE.

Everything but the routed experts and the router is copied (attention, norms, embeddings, a shared expert and its
gate). Each MoE layer's new experts are copies of its old ones; top-k and every other routing option stay, so a
token still runs k experts (the per-token cost is unchanged) and continued training breaks the symmetry between
copies. The rule, for expert ``e`` of a layer given ``c_e >= 1`` copies (``sum_e c_e = m E``):

* **Which experts are duplicated.** ``uniform``: ``c_e = m``. ``utility``: every expert keeps itself, and each of
  the ``(m - 1) E`` new slots goes, one at a time, to the expert with the largest ``u_e / c_e`` (its utility per
  copy so far; D'Hondt's rule, ties to the lower index), so equal utilities give the uniform split. The utility
  ``u_e = sum_b |sum_{w in expert e} w * dL_b/dw|`` is the first-order (Taylor) estimate of how much the language-model
  loss of batch ``b`` changes when the expert is removed, summed over ``utility_batches`` training batches (the
  cross-entropy only, no balancing loss), read from the data stream right after the parent's last sequence.
* **Layout and weights.** New expert ``j < E`` is old expert ``j`` (bit for bit); the extra copies follow in the
  order of their source expert. Every copy's ``gate_up_proj`` and ``down_proj`` equal its source's; ``noise_std``
  adds ``N(0, (noise_std std(W))^2)`` to each matrix (gate, up, down) of the extra copies only.
* **Router.** A copy's router row is its source's row. With ``router_offset`` its logit is its source's minus
  ``ln c_e``, so ``sum over the copies of softmax = c_e exp(z_e) / c_e / Z = p_e``: the full softmax mass of every
  original expert is preserved exactly. Under ``uniform`` the offset ``-ln m`` is the same for every expert, which
  softmax ignores, so no bias is added; under ``utility`` the offsets live in a router bias (``moe.router_bias``,
  the parent's bias, if any, carried over). Without the offset each expert's mass grows with its copies.

What is not preserved: with top-k fixed, the k selected slots now split among copies. Under ``uniform`` the
``m`` copies of an expert tie, so renormalised top-k with ``m`` dividing ``k`` selects exactly the parent's top
``k / m`` experts, each with all its copies: the expanded model computes the parent with top-(k/m) routing (exact,
tested); with ``k < m`` and renormalisation it computes the parent's top-1 expert alone; without renormalisation
each selected copy carries ``p_e / c_e``, so the routed output shrinks. The surgery report measures the step-0
loss change this makes, and the routing on the parent's own MoE inputs: the preserved mass (to rounding), the
top-k mass before and after, and how many distinct original experts the top-k of the expanded router covers.
Without ``noise_std``, copies that are selected together (renormalised top-k >= 2) receive equal gradients and stay
equal; the noise lets training tell them apart.

The recipe and the routing it implies (:func:`expanded_moe`) live in the torch-free
``stages.surgery.expansion_recipe``, which the workflow uses while building the DAG.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from stages.core.cli import UserError
from stages.core.options import as_dict
from stages.model.loss import cross_entropy
from stages.model.transformer import Transformer, seed_generator
from stages.surgery.expansion_recipe import ExpansionRecipe, expanded_moe
from stages.surgery.upcycling import logit_comparison
from stages.training.evaluation import validation_loss

EXPERTS = ("experts.gate_up_proj", "experts.down_proj")


def copy_counts(utility: Sequence[float], factor: int) -> list[int]:
    """Copies per expert: one each, then each of the (factor - 1) E new slots to the largest utility per copy."""
    counts = [1] * len(utility)
    for _ in range((factor - 1) * len(utility)):
        best = max(range(len(utility)), key=lambda e: (utility[e] / counts[e], -e))
        counts[best] += 1
    return counts


def copy_sources(counts: Sequence[int]) -> list[int]:
    """The old expert each new expert copies: 0..E-1 themselves, then the extra copies in source order."""
    return [*range(len(counts)), *(e for e, c in enumerate(counts) for _ in range(c - 1))]


def expert_utility(model: Transformer, batches: Iterable[torch.Tensor]) -> dict[int, list[float]]:
    """Per MoE layer, the gradient importance of each expert: sum over batches of |sum_w w dL/dw| over its weights
    (batches of token windows [B, T + 1]; the cross-entropy only)."""
    was_training = model.training
    model.eval()  # no dropout here either way; eval keeps the statistics untouched
    layers = {i: model.model.layers[i].mlp for i in model.cfg.moe_layers()}
    totals = {i: torch.zeros(mlp.n_experts, dtype=torch.float64) for i, mlp in layers.items()}
    params = [p for mlp in layers.values() for p in (mlp.experts.gate_up_proj, mlp.experts.down_proj)]
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss = cross_entropy(model(batch[:, :-1]).logits.float(), batch[:, 1:])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for n, (i, mlp) in enumerate(layers.items()):
            taylor = torch.zeros(mlp.n_experts, dtype=torch.float64)
            for w, g in zip((mlp.experts.gate_up_proj, mlp.experts.down_proj), grads[2 * n : 2 * n + 2], strict=True):
                if g is not None:
                    taylor += (w.detach().double() * g.double()).sum(dim=(1, 2))
            totals[i] += taylor.abs()
    model.train(was_training)
    return {i: [float(v) for v in t] for i, t in totals.items()}


def _noisy(w: torch.Tensor, rel_std: float, gen: torch.Generator) -> torch.Tensor:
    return w + torch.randn(w.shape, generator=gen) * (rel_std * float(w.std())) if rel_std > 0 else w


def expand(
    parent: Transformer,
    recipe: ExpansionRecipe,
    seed: int,
    utility: dict[int, list[float]] | None = None,
) -> tuple[Transformer, dict[int, list[int]]]:
    """The m x E-expert model made from ``parent`` by ``recipe`` (``utility`` per MoE layer for selection 'utility'),
    and the copies of each old expert per layer. Deterministic in ``seed`` (the noise)."""
    moe = parent.cfg.moe
    if moe is None:
        raise UserError("expand: the parent is a dense model; expansion needs an MoE (upcycle a dense model instead)")
    if recipe.selection == "utility" and utility is None:
        raise UserError("expand: selection 'utility' needs the experts' utility scores")
    cfg = dataclasses.replace(parent.cfg, moe=expanded_moe(moe, recipe))
    model = Transformer(cfg)
    gen = seed_generator(seed)
    old = parent.state_dict()
    state = model.state_dict()
    for name, w in old.items():
        if name in state and state[name].shape == w.shape:
            state[name] = w.clone()
    width = cfg.expert_d_ff
    copies: dict[int, list[int]] = {}
    for layer in cfg.moe_layers():
        src = f"model.layers.{layer}.mlp."
        if recipe.selection == "utility":
            assert utility is not None
            counts = copy_counts(utility[layer], recipe.factor)
        else:
            counts = [recipe.factor] * moe.experts
        sources = copy_sources(counts)
        copies[layer] = counts
        gate_up = old[src + EXPERTS[0]][sources].clone()  # [mE, 2F, d]
        down = old[src + EXPERTS[1]][sources].clone()  # [mE, d, F]
        for j in range(moe.experts, len(sources)):
            gate = _noisy(gate_up[j, :width], recipe.noise_std, gen)
            up = _noisy(gate_up[j, width:], recipe.noise_std, gen)
            gate_up[j] = torch.cat([gate, up], dim=0)
            down[j] = _noisy(down[j], recipe.noise_std, gen)
        state[src + EXPERTS[0]] = gate_up
        state[src + EXPERTS[1]] = down
        state[src + "gate.weight"] = old[src + "gate.weight"][sources].clone()
        if cfg.moe is not None and cfg.moe.router_bias:
            bias = old.get(src + "gate.bias", torch.zeros(moe.experts))[sources].clone()
            if recipe.router_offset:
                bias -= torch.tensor([math.log(counts[e]) for e in sources], dtype=bias.dtype)
            state[src + "gate.bias"] = bias
    model.load_state_dict(state)
    return model, copies


@torch.no_grad()
def moe_inputs(model: Transformer, batch: torch.Tensor) -> dict[int, torch.Tensor]:
    """The hidden states [tokens, d] that reach each MoE layer's router on ``batch`` [B, T]."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        model.model.layers[i].mlp.register_forward_pre_hook(
            lambda _m, args, i=i: seen.__setitem__(i, args[0].reshape(-1, args[0].shape[-1]).detach())
        )
        for i in model.cfg.moe_layers()
    ]
    try:
        model.eval()(batch)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def routing_check(
    parent: Transformer, expanded: Transformer, copies: dict[int, list[int]], batch: torch.Tensor
) -> dict[str, float]:
    """Both routers on the parent's own MoE inputs: how far each original expert's softmax mass moved (0 up to
    rounding with router_offset), the mean top-k probability mass before and after, and how many distinct
    original experts the expanded top-k covers on average (the parent's: k)."""
    assert parent.cfg.moe is not None and expanded.cfg.moe is not None
    k = parent.cfg.moe.top_k
    worst, mass_before, mass_after, distinct = 0.0, [], [], []
    for layer, x in moe_inputs(parent, batch).items():
        p = torch.softmax(parent.model.layers[layer].mlp.router_logits(x).double(), dim=-1)
        q = torch.softmax(expanded.model.layers[layer].mlp.router_logits(x).double(), dim=-1)
        sources = torch.tensor(copy_sources(copies[layer]))
        per_original = torch.zeros_like(p).index_add_(1, sources, q)
        worst = max(worst, float((per_original - p).abs().max()))
        mass_before.append(float(p.topk(k, dim=-1).values.sum(dim=-1).mean()))
        top = q.topk(k, dim=-1)
        mass_after.append(float(top.values.sum(dim=-1).mean()))
        distinct.append(float(torch.tensor([len(set(sources[row].tolist())) for row in top.indices]).double().mean()))
    return {
        "mass_max_abs_diff": worst,
        "topk_mass_parent": sum(mass_before) / len(mass_before),
        "topk_mass_expanded": sum(mass_after) / len(mass_after),
        "distinct_originals_in_topk": sum(distinct) / len(distinct),
    }


def surgery_report(
    parent: Transformer,
    model: Transformer,
    recipe: ExpansionRecipe,
    copies: dict[int, list[int]],
    utility: dict[int, list[float]] | None,
    windows: torch.Tensor,
    parent_path: str,
) -> dict[str, Any]:
    """The step-0 validation loss of the expanded MoE next to the parent's, the copies per expert, and the routing."""
    assert parent.cfg.moe is not None and model.cfg.moe is not None
    parent_loss = validation_loss(parent, windows)
    loss = validation_loss(model, windows)
    return {
        "parent_checkpoint": parent_path,
        "parent_val_loss": parent_loss,
        "expanded_val_loss": loss,
        "delta_val_loss": loss - parent_loss,
        "eval_tokens": int(windows.shape[0] * parent.cfg.max_seq_len),
        "experts": [parent.cfg.moe.experts, model.cfg.moe.experts],
        "top_k": model.cfg.moe.top_k,
        "copies": {str(layer): c for layer, c in copies.items()},
        "utility": {str(layer): u for layer, u in utility.items()} if utility is not None else None,
        "recipe": as_dict(recipe),
        "moe": model.cfg.to_dict()["moe"],
        **routing_check(parent.eval(), model.eval(), copies, windows[:4, :-1]),
        **logit_comparison(parent.eval(), model.eval(), windows[:4, :-1]),
    }
