"""Collect every evaluated run into ``results/tables/runs.csv`` (+ ``.parquet``): the input of all fits.

``python -m stages.collect --evals results/eval/**/eval.json --out results/tables/runs.csv``

One row per run. Sizes and FLOPs come from ``stages.compute`` (one counting convention everywhere);
D1, D2 and the sunk dense compute come from the provenance chain of each checkpoint, so a table row
can always be traced back to the runs that produced it.
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stages.core.artifacts import atomic_path, read_json, write_text
from stages.model.checkpoint import load_config, load_provenance
from stages.core.cli import ArgumentParser, UserError, run
from stages.model.compute import param_counts

COLUMNS = [
    "run_id", "kind", "model", "moe", "n_layer", "d_model", "vocab_size", "N_total", "N_active", "N_dense",
    "N_embedding", "experts", "top_k", "granularity", "norm_topk_prob", "method", "sparsity", "D1", "D2", "D",
    "D_total", "flops_per_token", "flops_run", "flops_total", "flops_convention", "val_loss", "eval_tokens",
    "seed", "schedule", "peak_lr", "seq_len", "batch_size", "checkpoint_sha256",
    # MoE routing and upcycling recipe (empty for dense runs), and the surgery's step-0 losses
    "moe_layers", "shared_expert_d_ff", "aux_loss_coef", "z_loss_coef", "capacity_factor", "router_init",
    "router_std", "scale_spread", "noise_std", "drop_ratio", "drop_indices", "step0_val_loss",
    "parent_val_loss",
]


def row_for(eval_path: Path) -> dict[str, Any]:
    """The runs-table row of one eval.json and the checkpoint it names."""
    ev = read_json(eval_path)
    ckpt = Path(ev.get("checkpoint", ""))
    prov = load_provenance(ckpt)
    cfg = load_config(ckpt)
    counts = param_counts(cfg)
    dense_counts = param_counts(dataclasses.replace(cfg, moe=None))
    lineage = prov.get("lineage", [])
    labels = prov.get("labels", {})
    kind = prov["kind"]
    own = int(prov["tokens"])
    dense_ancestors = sum(int(e["tokens"]) for e in lineage if e.get("kind") == "dense")
    d1 = own if kind == "dense" else dense_ancestors
    d2 = own if kind in ("upcycled", "dense_cont") else 0
    recipe = next((e.get("recipe") for e in reversed(lineage) if e.get("recipe")), None) or {}
    moe = cfg.moe
    train = prov.get("train", {})
    surgery = _surgery(prov) if kind == "upcycled" else {}
    return {
        "run_id": prov["run_id"],
        "kind": kind,
        "model": labels.get("model", ""),
        "moe": labels.get("moe", ""),
        "n_layer": cfg.n_layer,
        "d_model": cfg.d_model,
        "vocab_size": cfg.vocab_size,
        "N_total": counts.total(),
        "N_active": counts.active(),
        "N_dense": dense_counts.total(),
        "N_embedding": counts.embedding + counts.lm_head,
        "experts": moe.experts if moe else 0,
        "top_k": moe.top_k if moe else 0,
        "granularity": moe.granularity if moe else 0,
        "norm_topk_prob": bool(moe.norm_topk_prob) if moe else False,
        "method": recipe.get("method", "scratch" if kind == "scratch_moe" else ""),
        "sparsity": counts.total() / counts.active(),
        "D1": d1,
        "D2": d2,
        "D": own,
        "D_total": own + sum(int(e["tokens"]) for e in lineage),
        "flops_per_token": float(prov["flops_per_token"]),
        "flops_run": float(prov["flops"]),
        "flops_total": float(prov["flops"]) + sum(float(e["flops"]) for e in lineage),
        "flops_convention": prov["flops_convention"],
        "val_loss": float(ev["val_loss"]),
        "eval_tokens": int(ev["tokens"]),
        "seed": int(prov["seed"]),
        "schedule": prov.get("lr_policy", ""),
        "peak_lr": float(prov.get("peak_lr", 0.0)),
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
        "drop_indices": ("shared" if recipe["drop_shared_indices"] else "per_matrix") if recipe else "",
        "step0_val_loss": surgery.get("moe_val_loss", float("nan")),
        "parent_val_loss": surgery.get("dense_val_loss", float("nan")),
    }


def _surgery(provenance: dict[str, Any]) -> dict[str, Any]:
    """The surgery report of an upcycled run's initialisation (its parent directory)."""
    parent = provenance.get("parent") or {}
    path = Path(parent.get("path", "")) / "surgery.json"
    return read_json(path) if path.exists() else {}


def collect(eval_paths: Sequence[str | Path]) -> pd.DataFrame:
    rows = []
    for path in eval_paths:
        try:
            rows.append(row_for(Path(path)))
        except KeyError as err:
            raise UserError(f"{path}: its checkpoint's provenance lacks {err}; rerun that run") from None
    if not rows:
        raise UserError("collect: no eval.json files given")
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values("run_id", kind="stable").reset_index(drop=True)
    conventions = set(table["flops_convention"])
    if len(conventions) > 1:
        raise UserError(f"collect: runs mix FLOP conventions {sorted(conventions)}; use one train.flops_convention")
    return table


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.collect", description=__doc__.split("\n\n")[0])
    p.add_argument("--evals", nargs="+", required=True, help="eval.json files")
    p.add_argument("--out", required=True, help="runs.csv to write")
    p.add_argument("--parquet", default=None, help="runs.parquet to write (default: next to --out)")
    args = p.parse_args(argv)
    table = collect(args.evals)
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    write_text(args.out, buf.getvalue())
    parquet = Path(args.parquet) if args.parquet else Path(args.out).with_suffix(".parquet")
    with atomic_path(parquet) as tmp:
        table.to_parquet(tmp, index=False, engine="pyarrow")
    kinds = table["kind"].value_counts().sort_index()
    print(f"{args.out}: {len(table)} runs ({', '.join(f'{k} {v}' for k, v in kinds.items())})", file=sys.stderr)


if __name__ == "__main__":
    run(main)
