"""The growth recipe as a typed option group, and the checks of a growth that need no weights.

Torch-free: the workflow's config schema (each ``growth`` entry) is generated from :class:`GrowthRecipe`, and
config validation refuses a target the recipe cannot grow a grid model into (:func:`check_growth`) while the
DAG is built, with the same rules the surgery (``stages.surgery.growth``) enforces.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from stages.core.cli import UserError
from stages.core.options import check_bounds, option
from stages.model.config import ModelConfig, base_head_dim

# Fields the grown model must share with its parent: growth changes sizes, not the data, the math or the
# muP base (a muP parent grown under the same base gets a larger width multiplier, as muTransfer expects).
SHARED_FIELDS = (
    "vocab_size",
    "max_seq_len",
    "rope_theta",
    "norm_eps",
    "qkv_bias",
    "tie_embeddings",
    "parametrization",
    "mup_base_d_model",
)


@dataclass(frozen=True)
class GrowthRecipe:
    """How a dense parent is mapped onto a larger dense shape (the shape itself is the target model config)."""

    method: Literal["hypercloning", "shrink_perturb"] = option(
        "hypercloning",
        help="width operator: hypercloning tiles the parent (function preserving, integer factors); "
        "shrink_perturb shrinks, zero-pads and adds a scaled fresh initialisation",
    )
    depth: Literal["stack", "interleave"] = option(
        "stack", help="more layers: repeat the whole stack (stack) or each block in place (interleave)"
    )
    new_blocks: Literal["copy", "zero_output"] = option(
        "copy", help="duplicated blocks are copies, or copies with zero o_proj/down_proj (function preserving)"
    )
    noise_std: float = option(
        0.0,
        help="hypercloning: symmetry-breaking noise that cancels over the tiled inputs",
        unit="x matrix std",
        minimum=0,
    )
    shrink: float = option(0.5, help="shrink_perturb: factor on the parent's weights (unverified default)", minimum=0)
    perturb: float = option(
        1.0, help="shrink_perturb: scale of the fresh initialisation added (unverified default)", minimum=0
    )

    def __post_init__(self) -> None:
        check_bounds(self, "grow")
        if self.method != "shrink_perturb":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name in ("shrink", "perturb"):
                if getattr(self, name) != defaults[name]:
                    raise UserError(f"grow.{name}: only used by method 'shrink_perturb', got method {self.method!r}")
        if self.method != "hypercloning" and self.noise_std:
            raise UserError(f"grow.noise_std: only used by method 'hypercloning', got method {self.method!r}")


@dataclass(frozen=True)
class Factors:
    """How much larger the grown model is: hidden width, SwiGLU width, heads and layers."""

    d_model: float
    d_ff: float
    n_head: float
    n_layer: int


def check_growth(parent: ModelConfig, target: ModelConfig, recipe: GrowthRecipe) -> Factors:
    """Refuse a target the recipe cannot grow the parent into, naming the target's key (one line)."""
    if parent.moe is not None:
        raise UserError("grow: the parent is an MoE model; growth needs a dense parent (upcycle after growing)")
    if target.moe is not None:
        raise UserError("model.moe: growth makes a dense model; upcycle the grown checkpoint instead")
    for key in SHARED_FIELDS:
        if getattr(target, key) != getattr(parent, key):
            raise UserError(f"model.{key}: {getattr(target, key)!r} must equal the parent's {getattr(parent, key)!r}")
    for key in ("d_model", "d_ff", "n_layer"):
        if getattr(target, key) < getattr(parent, key):
            raise UserError(f"model.{key}: {getattr(target, key)} is smaller than the parent's {getattr(parent, key)}")
    if recipe.method == "hypercloning":
        for key in ("d_model", "d_ff"):
            if getattr(target, key) % getattr(parent, key):
                raise UserError(
                    f"model.{key}: {getattr(target, key)} is not an integer multiple of the parent's "
                    f"{getattr(parent, key)} (hypercloning)"
                )
    if target.head_dim != parent.head_dim:
        raise UserError(
            f"model.n_head: {target.n_head} gives head_dim {target.head_dim}, the parent's is {parent.head_dim}; "
            f"growth adds heads of the parent's size (n_head = d_model / {parent.head_dim})"
        )
    if parent.parametrization == "mup" and base_head_dim(target) != base_head_dim(parent):
        raise UserError(
            f"model.mup_base_head_dim: the grown model's base head size {base_head_dim(target)} differs from the "
            f"parent's {base_head_dim(parent)} (0 means mup_base_d_model / n_head, which changes with n_head); "
            f"set it to {base_head_dim(parent)} so attention keeps its scale"
        )
    group = parent.n_head // parent.n_kv_head
    if target.n_head // target.n_kv_head != group:
        raise UserError(
            f"model.n_kv_head: {target.n_kv_head} changes the parent's {group} query heads per KV head "
            f"(use n_kv_head = n_head / {group})"
        )
    if target.n_layer % parent.n_layer:
        raise UserError(
            f"model.n_layer: {target.n_layer} is not a multiple of the parent's {parent.n_layer} "
            "(blocks are duplicated)"
        )
    return Factors(
        d_model=target.d_model / parent.d_model,
        d_ff=target.d_ff / parent.d_ff,
        n_head=target.n_head / parent.n_head,
        n_layer=target.n_layer // parent.n_layer,
    )


def function_preserving(parent: ModelConfig, target: ModelConfig, recipe: GrowthRecipe) -> bool:
    """Whether theory says the grown model computes the parent's logits (up to rounding)."""
    same_width = (target.d_model, target.d_ff) == (parent.d_model, parent.d_ff)
    identity_padding = same_width and (recipe.shrink, recipe.perturb) == (1.0, 0.0)
    width_ok = recipe.method == "hypercloning" or identity_padding
    return width_ok and (target.n_layer == parent.n_layer or recipe.new_blocks == "zero_output")
