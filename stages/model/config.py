"""Model shapes as typed option groups: what ``config.json`` holds and what config validation checks.

Each field is declared once, with its help, unit and bounds; the workflow's config schema (the ``models``
entries and the routing half of each ``moe`` entry) is generated from these classes. Kept free of torch
so that the Snakefile can validate a grid's model and MoE settings while building the DAG, with the same
rules the model itself enforces.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.core.artifacts import read_json
from stages.core.cli import UserError
from stages.core.options import as_dict, check_bounds, option

CONFIG = "config.json"  # the model's shape, next to its weights in every checkpoint directory

LAYERS_SCHEMA = {
    "oneOf": [
        {"enum": ["all", "every_other"]},
        {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "uniqueItems": True},
    ]
}


@dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-experts routing; ``experts`` counts all routed experts (E, not the expansion rate)."""

    experts: int = option(help="number of routed experts E", minimum=1)
    top_k: int = option(help="experts per token", minimum=1)
    granularity: int = option(1, help="G: expert width = d_ff / G", minimum=1)
    norm_topk_prob: bool = option(False, help="renormalise the k weights (= top-k then softmax, Mixtral style)")
    layers: tuple[int, ...] | Literal["all", "every_other"] = option(
        "all", help="'all', 'every_other' (layers 1, 3, ...) or a list of layer indices", schema=LAYERS_SCHEMA
    )
    shared_expert_d_ff: int = option(0, help="width of a shared expert with a sigmoid gate (0: none)", minimum=0)
    aux_loss_coef: float = option(0.01, help="Switch load-balancing loss coefficient, mean over MoE layers", minimum=0)
    z_loss_coef: float = option(0.0, help="router z-loss coefficient, mean over MoE layers", minimum=0)
    capacity_factor: float = option(
        0.0, help="0: dropless; else drop the lowest-probability assignments over capacity", minimum=0
    )
    router_bias: bool = option(
        False,
        help="a learned bias on the router logits (zeros at init; expert expansion puts its -ln(copies) offset "
        "there); Hugging Face Qwen2-MoE and nanotron's MoE have none, so such a model cannot be exported",
    )

    def __post_init__(self) -> None:
        if self.layers is None:  # checkpoints written before 'all' was spelled out
            object.__setattr__(self, "layers", "all")
        elif not isinstance(self.layers, str):
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    def layer_indices(self, n_layer: int) -> tuple[int, ...]:
        """Indices of the MoE layers of an ``n_layer`` model (the one place 'every_other' is read)."""
        if self.layers == "all":
            return tuple(range(n_layer))
        if self.layers == "every_other":
            return tuple(range(1, n_layer, 2))
        if isinstance(self.layers, str):
            raise UserError(f"moe.layers: expected 'all', 'every_other' or a list of indices, got {self.layers!r}")
        return tuple(sorted(set(self.layers)))


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a transformer (Qwen2 conventions); stored as ``config.json`` next to the weights."""

    vocab_size: int = option(help="vocabulary size (from the corpus tokenizer)", minimum=1)
    n_layer: int = option(help="transformer blocks", minimum=1)
    d_model: int = option(help="hidden width", minimum=1)
    n_head: int = option(help="attention heads", minimum=1)
    d_ff: int = option(help="SwiGLU hidden width", minimum=1)
    n_kv_head: int = option(0, help="key/value heads (0 = n_head, no grouped KV)", minimum=0)
    max_seq_len: int = option(256, help="context length (the training sequence length)", unit="tokens", minimum=1)
    rope_theta: float = option(10000.0, help="rotary base", exclusive_minimum=0)
    norm_eps: float = option(1e-6, help="RMSNorm epsilon", exclusive_minimum=0)
    qkv_bias: bool = option(False, help="biases on the q/k/v projections")
    tie_embeddings: bool = option(True, help="output head shares the input embedding")
    init_std: float = option(
        0.02,
        help="std of the normal initialisation of every matrix (under mup: at the base width)",
        exclusive_minimum=0,
    )
    parametrization: Literal["sp", "mup"] = option(
        "sp",
        help="sp: one init std and lr for all matrices, 1/sqrt(head_dim) attention; mup: maximal update "
        "parametrization relative to mup_base_d_model (hidden init / sqrt(m), hidden lr / m, logits / m, "
        "1/head_dim attention; see stages/model/parametrization.py), so lr and init transfer across widths",
    )
    mup_base_d_model: int = option(
        0, help="mup: the base width, where mup equals sp (width multiplier m = d_model / this; sp: unused)", minimum=0
    )
    mup_base_head_dim: int = option(
        0,
        help="mup: head_dim where the 1/head_dim attention equals sp's 1/sqrt(head_dim) "
        "(0: mup_base_d_model / n_head; sp: unused)",
        minimum=0,
    )
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
        return () if self.moe is None else self.moe.layer_indices(self.n_layer)

    def validate(self) -> None:
        """Reject shapes the model cannot build, naming the offending key."""
        check_bounds(self, "model")
        if self.d_model % self.n_head:
            raise UserError(f"model.n_head: {self.n_head} does not divide d_model={self.d_model}")
        if self.head_dim % 2:
            raise UserError(f"model.n_head: head_dim={self.head_dim} must be even for rotary embeddings")
        if self.n_head % self.n_kv_head:
            raise UserError(f"model.n_kv_head: {self.n_kv_head} does not divide n_head={self.n_head}")
        if self.vocab_size > 1 << 32:
            raise UserError(f"model.vocab_size: {self.vocab_size} does not fit the uint32 token shards")
        if self.parametrization == "mup" and self.mup_base_d_model == 0:
            raise UserError("model.mup_base_d_model: parametrization mup needs the base width (a d_model, > 0)")
        if self.parametrization == "mup" and not self.mup_base_head_dim and self.mup_base_d_model % self.n_head:
            raise UserError(
                f"model.mup_base_head_dim: 0 means mup_base_d_model / n_head, but n_head={self.n_head} does not "
                f"divide mup_base_d_model={self.mup_base_d_model}; set it"
            )
        moe = self.moe
        if moe is None:
            return
        check_bounds(moe, "moe")
        if not 1 <= moe.top_k <= moe.experts:
            raise UserError(f"moe.top_k: must be between 1 and experts={moe.experts}, got {moe.top_k}")
        if moe.top_k == 1 and moe.norm_topk_prob:
            # Renormalising one weight makes it exactly 1, so the language-model loss sends the router no
            # gradient (only the balancing loss would train it). Plain top-1 is a different function (weight p < 1),
            # so an imported checkpoint with this routing (a Qwen2-MoE with num_experts_per_tok 1 and
            # norm_topk_prob true) is refused here too rather than silently converted.
            raise UserError(
                "moe.norm_topk_prob: with top_k 1 the renormalised weight is always 1, so the router gets no "
                "gradient from the language-model loss; use norm_topk_prob: false for top-1"
            )
        if self.d_ff % moe.granularity:
            raise UserError(f"moe.granularity: {moe.granularity} does not divide d_ff={self.d_ff}")
        for i in self.moe_layers():
            if not 0 <= i < self.n_layer:
                raise UserError(f"moe.layers: layer {i} outside 0..{self.n_layer - 1}")

    def to_dict(self) -> dict[str, Any]:
        d = as_dict(dataclasses.replace(self, moe=None))
        d["moe"] = None if self.moe is None else as_dict(self.moe)
        return d

    @classmethod
    def read(cls, directory: str | Path) -> ModelConfig:
        """The ``config.json`` of a checkpoint directory, checked (torch-free: collect reads it too)."""
        path = Path(directory) / CONFIG
        data = read_json(path)
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object")
        return cls.checked(data, str(path))

    @classmethod
    def checked(cls, data: dict[str, Any], where: str) -> ModelConfig:
        """``from_dict`` whose every error is one line starting with ``where`` (a file or a flag)."""
        try:
            return cls.from_dict(data)
        except TypeError as err:
            raise UserError(f"{where}: invalid model config ({err})") from None
        except UserError as err:
            raise UserError(f"{where}: {err}") from None

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


def base_head_dim(cfg: ModelConfig) -> int:
    """The head size at which the muP attention scale equals SP's (0 in the config: base d_model / n_head)."""
    return cfg.mup_base_head_dim or cfg.mup_base_d_model // cfg.n_head
