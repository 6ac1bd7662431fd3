"""Model shapes as plain data: what ``config.json`` holds and what config validation checks.

Kept free of torch so that the Snakefile can validate a grid's model and MoE settings while building
the DAG, with the same rules the model itself enforces.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from stages.core.cli import UserError


@dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-experts settings; ``experts`` counts all routed experts (E, not the expansion rate)."""

    experts: int
    top_k: int
    granularity: int = 1  # G: expert width = d_ff // G
    norm_topk_prob: bool = False  # renormalise the k weights (== top-k then softmax, Mixtral style)
    layers: tuple[int, ...] | None = None  # None: every layer
    shared_expert_d_ff: int = 0  # 0: no shared expert
    aux_loss_coef: float = 0.01  # Switch load-balancing loss, mean over MoE layers
    z_loss_coef: float = 0.0  # router z-loss, mean over MoE layers
    capacity_factor: float = 0.0  # 0: dropless; else drop lowest-probability assignments over capacity

    def __post_init__(self) -> None:
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a transformer; stored as ``config.json`` next to the weights."""

    vocab_size: int
    n_layer: int
    d_model: int
    n_head: int
    d_ff: int
    n_kv_head: int = 0  # 0: same as n_head (plain multi-head attention)
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    qkv_bias: bool = False
    tie_embeddings: bool = True
    init_std: float = 0.02
    moe: MoEConfig | None = field(default=None)

    def __post_init__(self) -> None:
        if self.n_kv_head == 0:
            object.__setattr__(self, "n_kv_head", self.n_head)
        if isinstance(self.moe, dict):
            object.__setattr__(self, "moe", MoEConfig(**self.moe))
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def expert_d_ff(self) -> int:
        assert self.moe is not None
        return self.d_ff // self.moe.granularity

    def moe_layers(self) -> tuple[int, ...]:
        """Indices of the layers whose feed-forward block is an MoE layer."""
        if self.moe is None:
            return ()
        if self.moe.layers is None:
            return tuple(range(self.n_layer))
        return tuple(sorted(set(self.moe.layers)))

    def validate(self) -> None:
        """Reject shapes the model cannot build, naming the offending key."""
        positive = ("vocab_size", "n_layer", "d_model", "n_head", "d_ff", "n_kv_head", "max_seq_len")
        for key in positive:
            if int(getattr(self, key)) <= 0:
                raise UserError(f"model.{key}: must be a positive integer, got {getattr(self, key)}")
        if self.d_model % self.n_head:
            raise UserError(f"model.n_head: {self.n_head} does not divide d_model={self.d_model}")
        if self.head_dim % 2:
            raise UserError(f"model.n_head: head_dim={self.head_dim} must be even for rotary embeddings")
        if self.n_head % self.n_kv_head:
            raise UserError(f"model.n_kv_head: {self.n_kv_head} does not divide n_head={self.n_head}")
        if self.vocab_size > 65536:
            raise UserError(f"model.vocab_size: {self.vocab_size} does not fit the uint16 token shards")
        moe = self.moe
        if moe is None:
            return
        if moe.experts < 1:
            raise UserError(f"moe.experts: must be >= 1, got {moe.experts}")
        if not 1 <= moe.top_k <= moe.experts:
            raise UserError(f"moe.top_k: must be between 1 and experts={moe.experts}, got {moe.top_k}")
        if moe.granularity < 1 or self.d_ff % moe.granularity:
            raise UserError(f"moe.granularity: {moe.granularity} does not divide d_ff={self.d_ff}")
        for key in ("aux_loss_coef", "z_loss_coef", "capacity_factor", "shared_expert_d_ff"):
            if getattr(moe, key) < 0:
                raise UserError(f"moe.{key}: must be >= 0, got {getattr(moe, key)}")
        for i in self.moe_layers():
            if not 0 <= i < self.n_layer:
                raise UserError(f"moe.layers: layer {i} outside 0..{self.n_layer - 1}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.moe is not None and self.moe.layers is not None:
            d["moe"]["layers"] = list(self.moe.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"model config: unknown key {unknown[0]!r}")
        moe = d.pop("moe", None)
        if moe is not None:
            moe_known = {f.name for f in dataclasses.fields(MoEConfig)}
            bad = sorted(set(moe) - moe_known)
            if bad:
                raise UserError(f"model config: unknown key 'moe.{bad[0]}'")
            moe = MoEConfig(**moe)
        return cls(**d, moe=moe)
