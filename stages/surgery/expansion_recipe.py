"""The expert-expansion recipe as a typed option group, and the expanded routing it implies.

Torch-free: the workflow's config schema (each ``expansion`` entry) is generated from :class:`ExpansionRecipe`,
and the grid counts the expanded model's parameters and FLOPs with :func:`expanded_moe` while the DAG is built,
with the same rules the surgery (``stages.surgery.expansion``) applies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from stages.core.cli import UserError
from stages.core.options import check_bounds, option
from stages.model.config import MoEConfig

UTILITY_OPTIONS = ("utility_batches", "utility_batch_size")


@dataclass(frozen=True)
class ExpansionRecipe:
    """How a trained E-expert MoE becomes an m x E-expert MoE (top-k and every other routing option unchanged)."""

    factor: int = option(2, help="m: the expanded MoE has m x E routed experts, top-k unchanged", minimum=2)
    selection: Literal["uniform", "utility"] = option(
        "uniform",
        help="which experts are duplicated: uniform gives every expert m copies; utility gives each of the "
        "(m - 1) E new copies, one at a time, to the expert of highest gradient importance per copy it already "
        "has (D'Hondt), so important experts get more copies",
    )
    utility_batches: int = option(
        8,
        help="utility: training batches the gradient importance is summed over (the stream's sequences right "
        "after the parent's, the ones the expanded run would see first)",
        minimum=1,
    )
    utility_batch_size: int = option(8, help="utility: sequences per batch", unit="sequences", minimum=1)
    router_offset: bool = option(
        True,
        help="each copy's router logit is its expert's minus ln(copies), so every original expert keeps its "
        "softmax probability mass (uniform: a constant shift, no bias needed; utility: a router bias)",
    )
    noise_std: float = option(
        0.0,
        help="noise on the new copies' expert weights (never on the originals or the router) that breaks the "
        "symmetry between copies; the routing mass is untouched",
        unit="x matrix std",
        minimum=0,
    )

    def __post_init__(self) -> None:
        check_bounds(self, "expand")
        if self.selection != "utility":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name in UTILITY_OPTIONS:
                if getattr(self, name) != defaults[name]:
                    raise UserError(f"expand.{name}: only used by selection 'utility', got {self.selection!r}")


def needs_router_bias(recipe: ExpansionRecipe) -> bool:
    """Whether the offsets differ between experts (uneven copies), so that they need a router bias to live in."""
    return recipe.router_offset and recipe.selection == "utility"


def expanded_moe(parent: MoEConfig, recipe: ExpansionRecipe) -> MoEConfig:
    """The routing of the expanded model: m x E experts, a router bias where the offsets need one, all else kept."""
    return dataclasses.replace(
        parent,
        experts=parent.experts * recipe.factor,
        router_bias=parent.router_bias or needs_router_bias(recipe),
    )
