"""The upcycling recipe as a typed option group: how experts and router are made from the dense FFN.

Torch-free: the workflow's config schema (the surgery half of each ``moe`` entry) is generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stages.core.cli import UserError
from stages.core.options import check_bounds, option
from stages.model.config import MoEConfig


@dataclass(frozen=True)
class UpcycleRecipe:
    """How each MoE layer's experts and router are initialised from the dense checkpoint."""

    method: Literal["naive", "virtual_group", "drop"] = option(
        "naive",
        help="naive copies; virtual_group shards the FFN into G-wide groups sharing a router row; "
        "drop re-draws a share of neurons (Drop-Upcycling)",
    )
    router_init: Literal["normal", "uniform", "zeros"] = option("normal", help="router weight initialisation")
    router_std: float = option(0.02, help="std of the router initialisation", minimum=0)
    scale_spread: Literal["none", "down", "megatron"] = option(
        "none", help="weight scaling that restores the dense output scale: on down only, or a^(1/3) on gate/up/down"
    )
    noise_std: float = option(0.0, help="Gaussian noise added to each expert matrix", unit="x matrix std", minimum=0)
    drop_ratio: float = option(0.0, help="Drop-Upcycling share of re-initialised neurons", minimum=0, maximum=1)
    drop_per_matrix_indices: bool = option(
        False, help="draw the re-initialised neurons separately for gate, up and down (Drop-Upcycling's code)"
    )

    def __post_init__(self) -> None:
        check_bounds(self, "upcycle")
        if self.method != "drop" and self.drop_ratio:
            raise UserError(f"upcycle.drop_ratio: only used by method 'drop', got method {self.method!r}")


def check_compatible(recipe: UpcycleRecipe, moe: MoEConfig, dense_d_ff: int) -> None:
    """Rules that involve the recipe and the MoE shape together (checked by config validation and surgery)."""
    if recipe.method == "virtual_group" and moe.experts % moe.granularity:
        raise UserError(
            f"moe.experts: {moe.experts} is not a multiple of granularity {moe.granularity} (virtual_group)"
        )
    if moe.shared_expert_d_ff > dense_d_ff:
        raise UserError(f"moe.shared_expert_d_ff: {moe.shared_expert_d_ff} exceeds the dense d_ff {dense_d_ff}")
