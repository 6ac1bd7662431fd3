"""Growth: a trained dense model becomes a larger dense model (wider, deeper or both) to warm-start training.

Width is grown by one of two methods (``d`` -> ``d'`` hidden, ``f`` -> ``f'`` SwiGLU width, heads added,
never widened), then depth by duplicating blocks (``L`` -> ``L' = k L``):

* ``hypercloning`` (Samragh et al. 2024): function preserving for integer factors ``n = d'/d`` and
  ``m = f'/f``. The grown hidden state is the parent's tiled ``n`` times, ``x' = [x, ..., x]``. A matrix
  whose input is tiled ``c_in`` times and output tiled ``c_out`` times becomes the ``c_out x c_in`` block
  matrix of ``W / c_in`` (each output copy sums ``c_in`` equal inputs: ``sum_b (W/c_in) x = W x``):
  q/k/v/o are ``n x n`` blocks, gate/up ``m x n``, down ``n x m``, an untied head ``1 x n``. The embedding
  is tiled unscaled, norm gains and q/k/v biases are tiled. RMSNorm keeps its value because the mean of
  squares of a tiled vector equals the parent's. Heads are cloned, not widened: copy ``c`` of query head
  ``h`` is head ``c H + h`` and copy ``c`` of KV head ``j`` is KV head ``c H_kv + j``, so the grouped-KV map
  (query head ``i`` reads KV head ``i // (H/H_kv)``) sends every copy to a copy of its own KV head. Widening
  heads instead would change the rotary frequencies (they depend on the head dimension), the rotate-half
  pairing and the 1/sqrt(head_dim) softmax scale, so it could not preserve the function. With tied
  embeddings the head is the tiled embedding, whose logits would be ``n`` times the parent's; the final
  norm gain is divided by ``n`` instead. Under muP the logits are multiplied by ``1/m`` (width multiplier
  ``m = d / base``), which the grown model applies with ``m' = n m``; the readout (untied head, or the
  final gain of a tied one) is multiplied by ``m'/m = n`` to make up for it, and the muP base, including
  the base head size that sets the attention scale, must stay the parent's. ``noise_std`` breaks the
  symmetry between copies (without it the copies get equal gradients forever and the model stays the small
  one): block ``(a, b)`` gets ``eta_ab - mean_b eta_ab`` with ``eta ~ N(0, (noise_std std(W))^2)``, which
  sums to zero over the input copies, so the function is still preserved. Embedding and gains get no noise.
* ``shrink_perturb`` (Mallik et al. 2024, warm-starting under muTransfer): every matrix becomes
  ``shrink * pad(W) + perturb * W0``, where ``pad`` puts the parent's matrix in the leading corner of a zero
  matrix of the grown shape (heads first, so parent head ``h`` stays head ``h`` with its KV head) and
  ``W0`` is a fresh initialisation of the grown model (muP-scaled when the model is muP). Norm gains and
  biases are the parent's, padded with their initial values (ones, zeros) and neither shrunk nor
  perturbed: a gain is a scale, and shrinking it would compound over the layers. The paper's shrink and
  perturbation values were not checked here; sweep them.

Depth (``k = L'/L``): ``stack`` repeats the whole stack (grown block ``j`` is parent block ``j mod L``),
``interleave`` repeats each block in place (``j // k``). The first occurrence of each parent block is the
original, the others are new; ``new_blocks: zero_output`` zeroes the new blocks' attention ``o_proj`` and
MLP ``down_proj``, so they add nothing to the residual stream and the function is preserved (applied last,
after any perturbation). Width and depth combine: width first, then depth.

The recipe and the checks that need no weights (:func:`check_growth`) live in the torch-free
``stages.surgery.growth_recipe``, which config validation uses too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from stages.core.options import as_dict
from stages.model.checkpoint import state_dict_for_saving
from stages.model.config import ModelConfig
from stages.model.parametrization import output_multiplier
from stages.model.transformer import Transformer, seed_generator
from stages.surgery.growth_recipe import GrowthRecipe, check_growth, function_preserving
from stages.surgery.upcycling import logit_comparison
from stages.training.evaluation import validation_loss


def is_gain(name: str) -> bool:
    return name.endswith("layernorm.weight") or name == "model.norm.weight"


def block_tile(
    w: torch.Tensor, out_copies: int, in_copies: int, noise_std: float = 0.0, gen: torch.Generator | None = None
) -> torch.Tensor:
    """The ``out_copies x in_copies`` block matrix of ``w / in_copies``, plus noise summing to 0 over input copies."""
    out = (w / in_copies).repeat(out_copies, in_copies)
    if noise_std > 0 and in_copies > 1:
        o, i = w.shape
        eta = torch.randn(out_copies, in_copies, o, i, generator=gen) * (noise_std * float(w.std()))
        eta = eta - eta.mean(dim=1, keepdim=True)
        out = out + eta.permute(0, 2, 1, 3).reshape(out_copies * o, in_copies * i)
    return out


def hyperclone_width(
    state: dict[str, torch.Tensor], parent: ModelConfig, target: ModelConfig, noise_std: float, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """The parent's tensors (``L`` layers) at the target's width, computing the parent's function exactly."""
    n, m = target.d_model // parent.d_model, target.d_ff // parent.d_ff
    # muP multiplies the logits by 1/(width multiplier), which grows n times: the readout makes up for it.
    readout = output_multiplier(parent) / output_multiplier(target)
    # (output copies, input copies) of each matrix; biases and gains are tiled like their outputs.
    copies = {
        "q_proj": (n, n),
        "k_proj": (n, n),
        "v_proj": (n, n),
        "o_proj": (n, n),
        "gate_proj": (m, n),
        "up_proj": (m, n),
        "down_proj": (n, m),
    }
    out = {}
    for name, w in sorted(state.items()):
        kind = name.split(".")[-2]
        if name == "model.embed_tokens.weight":
            out[name] = w.repeat(1, n)
        elif name == "lm_head.weight":
            out[name] = block_tile(w, 1, n, noise_std, gen) * readout
        elif name == "model.norm.weight":
            out[name] = w.repeat(n) * (readout / n if parent.tie_embeddings else 1.0)
        elif is_gain(name):
            out[name] = w.repeat(n)
        elif name.endswith(".bias"):
            out[name] = w.repeat(copies[kind][0])
        else:
            out[name] = block_tile(w, *copies[kind], noise_std, gen)
    return out


def pad_width(state: dict[str, torch.Tensor], shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Each parent tensor in the leading corner of the grown shape, padded with zeros (gains: with ones)."""
    out = {}
    for name, w in state.items():
        padded = torch.full(shapes[name], 1.0 if is_gain(name) else 0.0)
        padded[tuple(slice(0, s) for s in w.shape)] = w
        out[name] = padded
    return out


def layer_sources(n_parent: int, n_target: int, depth: str) -> list[int]:
    """The parent block each grown block copies (``stack``: the stack repeated; ``interleave``: each block repeated)."""
    k = n_target // n_parent
    return [j % n_parent if depth == "stack" else j // k for j in range(n_target)]


def grow_depth(state: dict[str, torch.Tensor], sources: list[int]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Duplicate blocks by ``sources``; also returns the grown blocks that are not a first occurrence (the new ones)."""
    out = {name: w for name, w in state.items() if not name.startswith("model.layers.")}
    seen: set[int] = set()
    new = []
    for j, src in enumerate(sources):
        if src in seen:
            new.append(j)
        seen.add(src)
        prefix = f"model.layers.{src}."
        for name, w in state.items():
            if name.startswith(prefix):
                out[f"model.layers.{j}." + name[len(prefix) :]] = w.clone()
    return out, new


def grow(parent: Transformer, target: ModelConfig, recipe: GrowthRecipe, seed: int) -> Transformer:
    """Build the grown dense model from ``parent`` by ``recipe`` (deterministic in ``seed``)."""
    check_growth(parent.cfg, target, recipe)
    gen = seed_generator(seed)
    model = Transformer(target)
    fresh = None
    if recipe.method == "shrink_perturb":
        model.init_weights(gen)
        fresh = state_dict_for_saving(model)
    expected = state_dict_for_saving(model)
    parent_state = state_dict_for_saving(parent)
    if recipe.method == "hypercloning":
        wide = hyperclone_width(parent_state, parent.cfg, target, recipe.noise_std, gen)
    else:
        wide = pad_width(parent_state, {name: expected[name].shape for name in parent_state})
    state, new = grow_depth(wide, layer_sources(parent.cfg.n_layer, target.n_layer, recipe.depth))
    if fresh is not None:
        for name, w in state.items():
            if w.dim() == 2:
                state[name] = recipe.shrink * w + recipe.perturb * fresh[name]
    if recipe.new_blocks == "zero_output":
        for j in new:
            for proj in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
                state[f"model.layers.{j}.{proj}"] = torch.zeros_like(state[f"model.layers.{j}.{proj}"])
    assert set(state) == set(expected), sorted(set(state) ^ set(expected))
    for name, w in state.items():
        assert w.shape == expected[name].shape, (name, w.shape, expected[name].shape)
    model.load_state_dict(state, strict=not target.tie_embeddings)
    return model


def surgery_report(
    parent: Transformer, grown: Transformer, recipe: GrowthRecipe, windows: torch.Tensor, parent_path: str
) -> dict[str, Any]:
    """The step-0 validation loss of the grown model next to the parent's, and how far their logits are apart."""
    factors = check_growth(parent.cfg, grown.cfg, recipe)
    parent_loss = validation_loss(parent, windows)
    grown_loss = validation_loss(grown, windows)
    return {
        "parent_checkpoint": parent_path,
        "parent_val_loss": parent_loss,
        "grown_val_loss": grown_loss,
        "delta_val_loss": grown_loss - parent_loss,
        "eval_tokens": int(windows.shape[0] * parent.cfg.max_seq_len),
        "factors": dataclasses.asdict(factors),
        "function_preserving": function_preserving(parent.cfg, grown.cfg, recipe),
        "recipe": as_dict(recipe),
        "model": grown.cfg.to_dict(),
        **logit_comparison(parent.eval(), grown.eval(), windows[:4, :-1]),
    }
