"""Checkpoint surgery: a trained E-expert MoE checkpoint becomes an m x E-expert MoE (expert expansion).

``python -m stages.expand --parent results/scratch/s/e4k2/d_400K --data results/data/pdprose --seed 7 \\
    --recipe '{"factor": 2, "selection": "utility", "utility_batches": 8, "noise_std": 0.01}' \\
    --out results/expand/s/e4k2/d1_400K/x2g``

``--recipe`` is the expansion (factor m, uniform or utility-based selection of the experts to duplicate, the
router offset that keeps each original expert's softmax mass, symmetry-breaking noise); top-k and every other
routing option stay the parent's. Utility scores are gradient importances over ``utility_batches`` batches of the
training stream, read where the parent stopped. The output directory holds the expanded checkpoint, its run record
and ``surgery.json``: the step-0 validation loss of the expanded MoE next to the parent's, the copies of each
expert (and their utilities), and the routing measured on the parent's own MoE inputs. The rule:
stages/surgery/expansion.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from stages.core.cli import ArgumentParser, UserError, parse_json_object, run
from stages.core.options import from_json
from stages.corpus.shards import TrainStream, eval_windows, open_corpus
from stages.model.checkpoint import load_model
from stages.surgery.expansion import expand, expert_utility, surgery_report
from stages.surgery.expansion_recipe import ExpansionRecipe
from stages.surgery.product import save_surgery
from stages.training.runtime import configure


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m stages.expand", description=__doc__.split("\n\n")[0])
    p.add_argument("--parent", required=True, help="trained MoE checkpoint directory to expand")
    p.add_argument("--out", required=True, help="expanded checkpoint directory to write")
    p.add_argument("--data", required=True, help="corpus directory (utility batches, step-0 validation loss)")
    p.add_argument("--recipe", default="{}", help="JSON expansion recipe (factor, selection, router_offset, ...)")
    p.add_argument("--eval-tokens", type=int, default=32768, help="validation tokens for the step-0 comparison")
    p.add_argument("--run-id", default=None, help="identity recorded in the run record (default: --out)")
    p.add_argument("--labels", default="{}", help="JSON object of grid labels recorded in the run record")
    p.add_argument("--seed", type=int, required=True, help="seed of the symmetry-breaking noise")
    p.add_argument("--threads", type=int, default=1)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure(args.threads)
    recipe = from_json(ExpansionRecipe, args.recipe, "--recipe")
    labels = parse_json_object(args.labels, "--labels")
    parent_model, parent = load_model(args.parent)
    if parent_model.cfg.moe is None:
        raise UserError(f"--parent {args.parent}: a dense checkpoint; expansion needs an MoE (upcycle it first)")
    corpus = open_corpus(args.data, verify=("train", "val", "tokenizer"))
    corpus.check_checkpoint(parent_model.cfg.vocab_size, parent.data.tokenizer_sha256, f"--parent {args.parent}")
    utility = None
    if recipe.selection == "utility":
        seq_len = int((parent.train or {}).get("seq_len", parent_model.cfg.max_seq_len))
        stream = TrainStream(corpus.tokens("train"), seq_len, parent.data.data_seed)
        size, start = recipe.utility_batch_size, parent.data.end_sequence
        batches = (stream.batch(start + b * size, size) for b in range(recipe.utility_batches))
        utility = expert_utility(parent_model, batches)
    model, copies = expand(parent_model, recipe, args.seed, utility)
    windows = eval_windows(corpus.tokens("val"), parent_model.cfg.max_seq_len, args.eval_tokens)
    report = surgery_report(parent_model, model, recipe, copies, utility, windows, str(args.parent))
    out = Path(args.out)
    save_surgery(
        out,
        model,
        report,
        parent,
        str(args.parent),
        "expand",
        recipe,
        args.run_id or str(args.out),
        labels,
        args.seed,
        args.threads,
    )
    print(
        f"{out}: step-0 val loss parent {report['parent_val_loss']:.4f} -> expanded {report['expanded_val_loss']:.4f} "
        f"({report['experts'][0]} -> {report['experts'][1]} experts, top-{report['top_k']}, {recipe.selection}; "
        f"copies {report['copies']})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)
