"""The runs table: one row per evaluated run, the input of every fit, figure and plan.

Sizes and FLOPs come from the one counting convention of ``stages.model.compute``; D1, D2 and the sunk
dense compute come from the run record's lineage, so a row can always be traced back to the runs that
produced it. An imported parent counts as the dense phase with the pre-training its user stated; one
imported without it makes D1, D_total and flops_total of its descendants NaN (unknown, never zero).
A grown run (``grown``: a dense parent grown by ``stages.grow``, then trained) is a continuation like an
upcycled one: N_dense is its parent's size N1, D1 the parent's tokens, D2 its own, flops_total counts the
parent's sunk compute, the step-0 losses come from the growth's surgery.json and ``method`` is the growth
method (the other recipe options are the ``growth_*`` columns). An expanded run (``expanded``: an MoE from scratch
expanded by ``stages.expand``, then trained) likewise: D1 is its parent MoE's tokens, flops_total counts the
parent's compute, ``method`` is the expansion's selection (the other options are the ``expansion_*`` columns).
Torch-free: it reads JSON files only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stages.core.artifacts import read_json
from stages.core.cli import UserError
from stages.core.kinds import DENSE, EXPAND, GROW, GROWN, IMPORT, KINDS, SCRATCH_MOE, UPCYCLE
from stages.core.options import option_fields
from stages.core.record import RunRecord, read_record
from stages.model.compute import param_counts
from stages.model.config import ModelConfig, MoEConfig
from stages.surgery.expansion_recipe import ExpansionRecipe
from stages.surgery.growth_recipe import GrowthRecipe
from stages.surgery.recipe import UpcycleRecipe

COLUMNS = [
    "run_id",
    "kind",
    "model",
    "moe",
    "growth",  # the growth variant of a grown run (empty for the others)
    "expansion",  # the expansion variant of an expanded run (empty for the others)
    "n_layer",
    "d_model",
    "vocab_size",
    "N_total",
    "N_active",
    "N_dense",
    "N_embedding",
    "experts",
    "top_k",
    "granularity",
    "norm_topk_prob",
    "method",
    "sparsity",
    "D1",
    "D2",
    "D",
    "D_total",
    "flops_per_token",
    "flops_run",
    "flops_total",
    "flops_convention",
    "val_loss",
    "eval_tokens",
    "seed",
    "replica",  # 1, or k for the k-th seed of a replicated cell (grid.replicas)
    "schedule",
    "peak_lr",
    "parametrization",  # sp | mup (stages.model.parametrization)
    "seq_len",
    "batch_size",
    "checkpoint_sha256",
    # MoE routing and upcycling recipe (empty for dense runs), and the surgery's step-0 losses
    "moe_layers",
    "shared_expert_d_ff",
    "aux_loss_coef",
    "z_loss_coef",
    "capacity_factor",
    "router_init",
    "router_std",
    "scale_spread",
    "noise_std",
    "drop_ratio",
    "drop_indices",
    "step0_val_loss",
    "parent_val_loss",
    "router_health",  # the training run's router-health verdict (empty for dense runs)
    "branch_tokens",  # wsd: tokens of the shared stable run this run's cooldown started from (0: independent)
]
# every other routing or recipe option gets a column of its own name, so a new option needs no code here
# (``layers`` and ``drop_per_matrix_indices`` are the ``moe_layers`` and ``drop_indices`` columns above)
OPTION_COLUMNS = [
    f.name
    for group in (MoEConfig, UpcycleRecipe)
    for f in option_fields(group)
    if f.name not in COLUMNS and f.name not in ("layers", "drop_per_matrix_indices")
]
# the growth recipe of a grown run, one column per option but its method (the ``method`` column)
GROWTH_COLUMNS = [f"growth_{f.name}" for f in option_fields(GrowthRecipe) if f.name != "method"]
# the expansion recipe of an expanded run, one column per option but its selection (the ``method`` column)
EXPANSION_COLUMNS = [f"expansion_{f.name}" for f in option_fields(ExpansionRecipe) if f.name != "selection"]


def row_for(eval_path: Path) -> dict[str, Any]:
    """The runs-table row of one eval.json and the checkpoint it names."""
    ev = read_json(eval_path)
    if not ev.get("checkpoint"):
        raise UserError(f"{eval_path}: names no checkpoint (an eval.json written by stages.evaluate has one)")
    ckpt = Path(ev["checkpoint"])
    rec = read_record(ckpt)
    cfg = ModelConfig.read(ckpt)
    counts = param_counts(cfg)
    dense_counts = param_counts(dataclasses.replace(cfg, moe=None))
    lineage = rec.lineage
    labels = rec.labels
    kind = rec.kind
    spec = KINDS.get(kind)  # None for a record of a surgery or an import
    own = rec.tokens
    # an imported parent's stated pre-training is its D1; an unstated one leaves D1 and the totals unknown (NaN)
    unknown = math.nan if not all(a.tokens_known for a in lineage) else 0
    # the trained phase before this run (its D1): dense or imported ancestors, or the MoE an expanded run expands
    dense_ancestors = sum(a.tokens for a in lineage if a.kind in (DENSE, IMPORT, SCRATCH_MOE)) + unknown
    d1 = own if spec and spec.table_budget == "D1" else dense_ancestors
    d2 = own if spec and spec.table_budget == "D2" else 0
    recipe = next((a.recipe for a in reversed(lineage) if a.recipe and a.kind == UPCYCLE), None) or {}
    growth = next((a.recipe for a in reversed(lineage) if a.recipe and a.kind == GROW), None) or {}
    expansion = next((a.recipe for a in reversed(lineage) if a.recipe and a.kind == EXPAND), None) or {}
    # a grown run's dense parent (N1): the last dense or imported ancestor
    parent = next((a for a in reversed(lineage) if a.kind in (DENSE, IMPORT)), None)
    moe = cfg.moe
    train = rec.train or {}
    surgery = _surgery(rec) if spec and spec.surgery else {}
    options = {
        name: getattr(moe, name) if moe is not None and hasattr(moe, name) else recipe.get(name, None)
        for name in OPTION_COLUMNS
    }
    return {
        **options,
        "run_id": rec.run_id,
        "kind": kind,
        "model": labels.get("model", ""),
        "moe": labels.get("moe", ""),
        "growth": labels.get("growth", ""),
        **{column: growth.get(column.removeprefix("growth_")) for column in GROWTH_COLUMNS},
        "expansion": labels.get("expansion", ""),
        **{column: expansion.get(column.removeprefix("expansion_")) for column in EXPANSION_COLUMNS},
        "n_layer": cfg.n_layer,
        "d_model": cfg.d_model,
        "vocab_size": cfg.vocab_size,
        "N_total": counts.total(),
        "N_active": counts.active(),
        "N_dense": parent.N_total if kind == GROWN and parent is not None else dense_counts.total(),
        "N_embedding": counts.embedding + counts.lm_head,
        "experts": moe.experts if moe else 0,
        "top_k": moe.top_k if moe else 0,
        "granularity": moe.granularity if moe else 0,
        "norm_topk_prob": bool(moe.norm_topk_prob) if moe else False,
        "method": recipe.get(
            "method", growth.get("method", expansion.get("selection", "scratch" if kind == SCRATCH_MOE else ""))
        ),
        "sparsity": counts.total() / counts.active(),
        "D1": d1,
        "D2": d2,
        "D": own,
        "D_total": own + sum(a.tokens for a in lineage) + unknown,
        "flops_per_token": float(rec.flops_per_token),
        "flops_run": float(rec.flops),
        "flops_total": float(rec.flops) + sum(float(a.flops) for a in lineage) + unknown,
        "flops_convention": rec.flops_convention,
        "val_loss": float(ev["val_loss"]),
        "eval_tokens": int(ev["tokens"]),
        "seed": rec.seed,
        "replica": int(labels.get("replica", 1)),
        "schedule": rec.lr_policy or "",
        "peak_lr": float(rec.peak_lr or 0.0),
        "parametrization": cfg.parametrization,
        "seq_len": int(train.get("seq_len", 0)),
        "batch_size": int(train.get("batch_size", 0)),
        "checkpoint_sha256": ev["checkpoint_sha256"],
        "moe_layers": ",".join(str(i) for i in cfg.moe_layers()) if moe else "",
        "shared_expert_d_ff": moe.shared_expert_d_ff if moe else 0,
        "aux_loss_coef": moe.aux_loss_coef if moe else 0.0,
        "z_loss_coef": moe.z_loss_coef if moe else 0.0,
        "capacity_factor": moe.capacity_factor if moe else 0.0,
        "router_init": recipe.get("router_init", ""),
        "router_std": recipe.get("router_std", float("nan")),
        "scale_spread": recipe.get("scale_spread", ""),
        "noise_std": recipe.get("noise_std", float("nan")),
        "drop_ratio": recipe.get("drop_ratio", float("nan")),
        "drop_indices": ("per_matrix" if recipe["drop_per_matrix_indices"] else "shared") if recipe else "",
        "step0_val_loss": surgery.get(
            "moe_val_loss", surgery.get("grown_val_loss", surgery.get("expanded_val_loss", float("nan")))
        ),
        "parent_val_loss": surgery.get("dense_val_loss", surgery.get("parent_val_loss", float("nan"))),
        "router_health": rec.router_health or "",
        "branch_tokens": int((rec.schedule or {}).get("branch_step", 0)) * rec.tokens_per_step,
    }


def _surgery(record: RunRecord) -> dict[str, Any]:
    """The surgery report of an upcycled, grown or expanded run's initialisation (its parent directory)."""
    path = Path(record.parent.path if record.parent else "") / "surgery.json"
    return read_json(path) if path.exists() else {}


def collect(eval_paths: Sequence[str | Path]) -> pd.DataFrame:
    rows = []
    for path in eval_paths:
        try:
            rows.append(row_for(Path(path)))
        except KeyError as err:
            raise UserError(f"{path}: its checkpoint's run record lacks {err}; rerun that run") from None
    if not rows:
        raise UserError("collect: no eval.json files given")
    table = (
        pd.DataFrame(rows, columns=COLUMNS + OPTION_COLUMNS + GROWTH_COLUMNS + EXPANSION_COLUMNS)
        .sort_values("run_id", kind="stable")
        .reset_index(drop=True)
    )
    conventions = set(table["flops_convention"])
    if len(conventions) > 1:
        raise UserError(f"collect: runs mix FLOP conventions {sorted(conventions)}; use one train.flops_convention")
    return table
