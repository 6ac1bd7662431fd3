"""Checkpoint surgery: a dense checkpoint becomes an MoE checkpoint.

``python -m stages.upcycle --dense results/dense/s/d1_250K --experts 8 --top-k 2 --method naive \\
    --data results/data/pdprose --seed 7 --out results/upcycled/s/d1_250K/e8k2``

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
``a = G`` with renormalised top-k, ``a = E*G/k`` without. ``--scale-spread down`` puts all of ``a`` on the
down projection (exact for any activation); ``megatron`` puts ``a^(1/3)`` on gate, up and down as Megatron
does (exact for squared-ReLU, only approximate for SwiGLU because silu is not homogeneous). Router init:
normal(0, std), zero-mean uniform with that std, or zeros. A shared expert starts as the dense FFN (its
first ``shared_expert_d_ff`` neurons) with a zero gate (sigmoid 0.5). Optimizer state starts fresh.

The surgery report (``surgery.json``) puts the step-0 validation loss of the MoE next to the dense model's.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stages.core.artifacts import write_json
from stages.model.checkpoint import lineage_entry, load_model, save_checkpoint
from stages.core.cli import ArgumentParser, UserError, parse_json_object, run
from stages.core.codehash import code_hash
from stages.model.compute import param_counts
from stages.evaluate import validation_loss
from stages.model.transformer import Transformer, seed_generator
from stages.training.runtime import configure
from stages.model.config import MoEConfig
from stages.corpus.shards import eval_windows, open_corpus

METHODS = ("naive", "virtual_group", "drop")
ROUTER_INITS = ("normal", "uniform", "zeros")
SCALE_SPREADS = ("none", "down", "megatron")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How experts and router are initialised from the dense FFN."""

    method: str = "naive"
    router_init: str = "normal"
    router_std: float = 0.02
    scale_spread: str = "none"
    noise_std: float = 0.0  # relative to each matrix's std
    drop_ratio: float = 0.0  # Drop-Upcycling share of re-initialised neurons
    drop_shared_indices: bool = True  # one index set per expert for gate/up/down (False: one per matrix)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"upcycle.method: unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.router_init not in ROUTER_INITS:
            raise UserError(f"upcycle.router_init: expected one of {', '.join(ROUTER_INITS)}, got {self.router_init!r}")
        if self.scale_spread not in SCALE_SPREADS:
            raise UserError(
                f"upcycle.scale_spread: expected one of {', '.join(SCALE_SPREADS)}, got {self.scale_spread!r}"
            )
        if self.router_std < 0 or self.noise_std < 0:
            raise UserError("upcycle.router_std / upcycle.noise_std: must be >= 0")
        if not 0.0 <= self.drop_ratio <= 1.0:
            raise UserError(f"upcycle.drop_ratio: must be in [0, 1], got {self.drop_ratio}")
        if self.method != "drop" and self.drop_ratio:
            raise UserError(f"upcycle.drop_ratio: only used by method 'drop', got method {self.method!r}")


def scaling_factor(moe: MoEConfig) -> float:
    """Output-scale correction under a uniform router (He et al. Eq. 2, generalised as in Megatron)."""
    if moe.norm_topk_prob:
        return float(moe.granularity)
    return moe.experts * moe.granularity / moe.top_k


def init_router(experts: int, d_model: int, recipe: Recipe, granularity: int, gen: torch.Generator) -> torch.Tensor:
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


def drop_reinit(gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, ratio: float, shared: bool,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def upcycle(dense: Transformer, moe: MoEConfig, recipe: Recipe, seed: int) -> Transformer:
    """Build the MoE model whose experts, router and shared expert come from ``dense`` by ``recipe``."""
    if dense.cfg.moe is not None:
        raise UserError("upcycle: the input checkpoint is already an MoE model")
    recipe.validate()
    cfg = dataclasses.replace(dense.cfg, moe=moe)
    if recipe.method == "virtual_group" and moe.experts % moe.granularity:
        raise UserError(f"moe.experts: {moe.experts} is not a multiple of granularity {moe.granularity}")
    if moe.shared_expert_d_ff > cfg.d_ff:
        raise UserError(f"moe.shared_expert_d_ff: {moe.shared_expert_d_ff} exceeds the dense d_ff {cfg.d_ff}")
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
                g, u, d = drop_reinit(g, u, d, recipe.drop_ratio, recipe.drop_shared_indices, gen)
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
        if moe.shared_expert_d_ff:
            keep = slice(0, moe.shared_expert_d_ff)
            state[src + "shared_expert.gate_proj.weight"] = gate[keep].clone()
            state[src + "shared_expert.up_proj.weight"] = up[keep].clone()
            state[src + "shared_expert.down_proj.weight"] = down[:, keep].clone()
            state[src + "shared_expert_gate.weight"] = torch.zeros(1, cfg.d_model)
    model.load_state_dict(state)
    return model


@torch.no_grad()
def _logit_comparison(dense: Transformer, moe: Transformer, batch: torch.Tensor) -> dict[str, float]:
    a, b = dense(batch).logits.double(), moe(batch).logits.double()
    return {
        "max_abs_logit_diff": float((a - b).abs().max()),
        "max_rel_logit_diff": float((a - b).abs().max() / a.abs().max()),
        "logit_rms_ratio": float(b.pow(2).mean().sqrt() / a.pow(2).mean().sqrt()),
    }


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m stages.upcycle", description=__doc__.split("\n\n")[0])
    p.add_argument("--dense", required=True, help="dense checkpoint directory")
    p.add_argument("--out", required=True, help="MoE checkpoint directory to write")
    p.add_argument("--data", required=True, help="corpus directory (for the step-0 validation loss)")
    p.add_argument("--eval-tokens", type=int, default=32768, help="validation tokens for the step-0 comparison")
    p.add_argument("--run-id", default=None, help="identity recorded in provenance (default: --out)")
    p.add_argument("--labels", default="{}", help="JSON object of grid labels recorded in provenance")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--experts", type=int, required=True)
    p.add_argument("--top-k", type=int, required=True)
    p.add_argument("--granularity", type=int, default=1)
    p.add_argument("--norm-topk-prob", action="store_true", help="renormalise the k weights (= top-k then softmax)")
    p.add_argument("--moe-layers", default="all", help="'all', 'every_other' or comma-separated layer indices")
    p.add_argument("--shared-expert-d-ff", type=int, default=0)
    p.add_argument("--aux-loss-coef", type=float, default=0.01)
    p.add_argument("--z-loss-coef", type=float, default=0.0)
    p.add_argument("--capacity-factor", type=float, default=0.0, help="0: dropless")
    p.add_argument("--method", default="naive", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--router-init", default="normal", help=f"one of {', '.join(ROUTER_INITS)}")
    p.add_argument("--router-std", type=float, default=0.02)
    p.add_argument("--scale-spread", default="none", help=f"one of {', '.join(SCALE_SPREADS)}")
    p.add_argument("--noise-std", type=float, default=0.0)
    p.add_argument("--drop-ratio", type=float, default=0.0)
    p.add_argument("--drop-per-matrix-indices", action="store_true",
                   help="draw the re-initialised neurons separately for gate, up and down (Drop-Upcycling's code)")
    p.add_argument("--threads", type=int, default=1)
    return p


def moe_layers_from_text(text: str, n_layer: int) -> tuple[int, ...] | None:
    """``all`` -> None (every layer); ``every_other`` -> 1, 3, 5...; else a comma-separated list."""
    if text == "all":
        return None
    if text == "every_other":
        return tuple(range(1, n_layer, 2))
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--moe-layers: expected 'all', 'every_other' or indices like 0,2, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure(args.threads)
    dense, parent = load_model(args.dense)
    corpus = open_corpus(args.data, verify=("val", "tokenizer"))
    if dense.cfg.vocab_size != corpus.vocab_size:
        raise UserError(f"--dense {args.dense}: vocab_size {dense.cfg.vocab_size} does not match {args.data} "
                        f"({corpus.vocab_size}); tokenizer mismatch")
    labels = parse_json_object(args.labels, "--labels")
    moe = MoEConfig(
        experts=args.experts, top_k=args.top_k, granularity=args.granularity, norm_topk_prob=args.norm_topk_prob,
        layers=moe_layers_from_text(args.moe_layers, dense.cfg.n_layer), shared_expert_d_ff=args.shared_expert_d_ff,
        aux_loss_coef=args.aux_loss_coef, z_loss_coef=args.z_loss_coef, capacity_factor=args.capacity_factor,
    )
    recipe = Recipe(
        method=args.method, router_init=args.router_init, router_std=args.router_std, scale_spread=args.scale_spread,
        noise_std=args.noise_std, drop_ratio=args.drop_ratio, drop_shared_indices=not args.drop_per_matrix_indices,
    )
    model = upcycle(dense, moe, recipe, args.seed)

    windows = eval_windows(corpus.tokens("val"), dense.cfg.max_seq_len, args.eval_tokens)
    dense_loss = validation_loss(dense, windows)
    moe_loss = validation_loss(model, windows)
    report: dict[str, Any] = {
        "dense_checkpoint": str(args.dense),
        "dense_val_loss": dense_loss,
        "moe_val_loss": moe_loss,
        "delta_val_loss": moe_loss - dense_loss,
        "eval_tokens": int(windows.shape[0] * dense.cfg.max_seq_len),
        "scaling_factor": scaling_factor(moe) if recipe.scale_spread != "none" else 1.0,
        "recipe": dataclasses.asdict(recipe),
        "moe": model.cfg.to_dict()["moe"],
        **_logit_comparison(dense.eval(), model.eval(), windows[:4, :-1]),
    }
    counts = param_counts(model.cfg)
    provenance = {
        "run_id": args.run_id or str(args.out),
        "kind": "upcycle",
        "labels": labels,
        "seed": args.seed,
        "tokens": 0,
        "steps": 0,
        "flops": 0.0,
        "flops_convention": parent.get("flops_convention"),
        "N_total": counts.total(),
        "N_active": counts.active(),
        "recipe": dataclasses.asdict(recipe),
        "data": parent.get("data", {}),
        "parent": {"path": str(args.dense), "weights_sha256": parent["weights_sha256"]},
        "lineage": list(parent.get("lineage", [])) + [lineage_entry(parent)],
        "code_hash": code_hash("upcycle"),
        "torch_version": torch.__version__,
    }
    out = Path(args.out)
    save_checkpoint(out, model, provenance)
    write_json(out / "surgery.json", report)
    print(f"{out}: step-0 val loss dense {dense_loss:.4f} -> MoE {moe_loss:.4f} ({recipe.method})", file=sys.stderr)


if __name__ == "__main__":
    run(main)
