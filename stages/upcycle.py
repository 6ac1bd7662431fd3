"""Checkpoint surgery: a dense checkpoint becomes an MoE checkpoint (upcycling).

``python -m stages.upcycle --dense results/dense/s/d1_250K --data results/data/pdprose --seed 7 \\
    --moe '{"experts": 8, "top_k": 2, "norm_topk_prob": true}' --recipe '{"method": "naive"}' \\
    --out results/upcycled/s/d1_250K/e8k2``

``--moe`` is the routing group (experts, top-k, granularity, router order, losses), ``--recipe`` how the
experts and router are made from the dense FFN (naive copy, virtual groups, Drop-Upcycling, scaling,
noise, router init). The output directory holds the MoE checkpoint, its run record and ``surgery.json``:
the step-0 validation loss of the MoE next to the dense model's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from stages.core.cli import ArgumentParser, parse_json_object, run
from stages.core.options import from_json
from stages.corpus.shards import eval_windows, open_corpus
from stages.model.checkpoint import load_model
from stages.model.config import MoEConfig
from stages.surgery.product import save_surgery
from stages.surgery.recipe import UpcycleRecipe
from stages.surgery.upcycling import surgery_report, upcycle
from stages.training.runtime import configure


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m stages.upcycle", description=__doc__.split("\n\n")[0])
    p.add_argument("--dense", required=True, help="dense checkpoint directory")
    p.add_argument("--out", required=True, help="MoE checkpoint directory to write")
    p.add_argument("--data", required=True, help="corpus directory (for the step-0 validation loss)")
    p.add_argument("--moe", required=True, help="JSON MoE routing options (experts, top_k, ...)")
    p.add_argument("--recipe", default="{}", help="JSON upcycling recipe (method, router_init, ...)")
    p.add_argument("--eval-tokens", type=int, default=32768, help="validation tokens for the step-0 comparison")
    p.add_argument("--run-id", default=None, help="identity recorded in the run record (default: --out)")
    p.add_argument("--labels", default="{}", help="JSON object of grid labels recorded in the run record")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure(args.threads)
    moe = from_json(MoEConfig, args.moe, "--moe")
    recipe = from_json(UpcycleRecipe, args.recipe, "--recipe")
    labels = parse_json_object(args.labels, "--labels")
    dense, parent = load_model(args.dense)
    corpus = open_corpus(args.data, verify=("val", "tokenizer"))
    corpus.check_checkpoint(dense.cfg.vocab_size, parent.data.tokenizer_sha256, f"--dense {args.dense}")
    model = upcycle(dense, moe, recipe, args.seed)
    windows = eval_windows(corpus.tokens("val"), dense.cfg.max_seq_len, args.eval_tokens)
    report = surgery_report(dense, model, recipe, windows, str(args.dense))
    out = Path(args.out)
    save_surgery(
        out, model, report, parent, str(args.dense), "upcycle", recipe, args.run_id or str(args.out), labels, args.seed
    )
    print(
        f"{out}: step-0 val loss dense {report['dense_val_loss']:.4f} -> MoE {report['moe_val_loss']:.4f} "
        f"({recipe.method})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)
