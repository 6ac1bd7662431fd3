"""Checkpoint surgery: a dense checkpoint becomes a larger dense checkpoint (growth) to warm-start training.

``python -m stages.grow --parent results/dense/s/d1_250K --data results/data/pdprose --seed 7 \\
    --model '{"vocab_size": 4096, "n_layer": 8, "d_model": 256, "n_head": 8, "d_ff": 1024}' \\
    --recipe '{"method": "hypercloning", "depth": "stack", "new_blocks": "zero_output"}' \\
    --out results/grow/s/d1_250K/w2``

``--model`` is the full shape of the grown model (validated against the parent: same vocabulary,
context and head size; integer width factors for hypercloning; a multiple of the parent's layers),
``--recipe`` how the parent's weights fill it (hypercloning or shrink-and-perturb for width, stacked or
interleaved copies for depth). The output directory holds the grown checkpoint, its run record and
``surgery.json``: the step-0 validation loss of the grown model next to the parent's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from stages.core.cli import ArgumentParser, UserError, parse_json_object, run
from stages.core.options import from_json
from stages.corpus.shards import eval_windows, open_corpus
from stages.model.checkpoint import load_model
from stages.model.config import ModelConfig
from stages.surgery.growth import grow, surgery_report
from stages.surgery.growth_recipe import GrowthRecipe, check_growth
from stages.surgery.product import save_surgery
from stages.training.runtime import configure


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m stages.grow", description=__doc__.split("\n\n")[0])
    p.add_argument("--parent", required=True, help="dense checkpoint directory to grow")
    p.add_argument("--out", required=True, help="grown checkpoint directory to write")
    p.add_argument("--data", required=True, help="corpus directory (for the step-0 validation loss)")
    p.add_argument("--model", required=True, help="JSON model config of the grown model (every ModelConfig key)")
    p.add_argument("--recipe", default="{}", help="JSON growth recipe (method, depth, new_blocks, ...)")
    p.add_argument("--eval-tokens", type=int, default=32768, help="validation tokens for the step-0 comparison")
    p.add_argument("--run-id", default=None, help="identity recorded in the run record (default: --out)")
    p.add_argument("--labels", default="{}", help="JSON object of grid labels recorded in the run record")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    return p


def target_config(text: str) -> ModelConfig:
    """The grown model's shape from ``--model`` (every error names the flag and the key)."""
    return ModelConfig.checked(parse_json_object(text, "--model"), "--model")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure(args.threads)
    target = target_config(args.model)
    recipe = from_json(GrowthRecipe, args.recipe, "--recipe")
    labels = parse_json_object(args.labels, "--labels")
    parent_model, parent = load_model(args.parent)
    if parent_model.cfg.moe is not None:
        raise UserError(f"--parent {args.parent}: an MoE checkpoint; growth needs a dense parent")
    try:
        check_growth(parent_model.cfg, target, recipe)
    except UserError as err:
        raise UserError(f"--model: {err} (parent {args.parent})") from None
    corpus = open_corpus(args.data, verify=("val", "tokenizer"))
    corpus.check_checkpoint(parent_model.cfg.vocab_size, parent.data.tokenizer_sha256, f"--parent {args.parent}")
    model = grow(parent_model, target, recipe, args.seed)
    windows = eval_windows(corpus.tokens("val"), parent_model.cfg.max_seq_len, args.eval_tokens)
    report = surgery_report(parent_model, model, recipe, windows, str(args.parent))
    out = Path(args.out)
    save_surgery(
        out,
        model,
        report,
        parent,
        str(args.parent),
        "grow",
        recipe,
        args.run_id or str(args.out),
        labels,
        args.seed,
        args.threads,
    )
    print(
        f"{out}: step-0 val loss parent {report['parent_val_loss']:.4f} -> grown {report['grown_val_loss']:.4f} "
        f"({recipe.method}, {parent_model.cfg.n_layer}x{parent_model.cfg.d_model} -> "
        f"{target.n_layer}x{target.d_model})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)
