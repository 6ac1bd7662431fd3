"""Checkpoints to and from Hugging Face transformers (Qwen2 / Qwen2-MoE) and nanotron, as exact renames.

``python -m stages.export --checkpoint DIR --to hf|nanotron --out OUT [--tokenizer PATH]``
``python -m stages.export --checkpoint SRC --from hf|nanotron --out DIR``
``python -m stages.export --checkpoint HF_DIR --from hf --out DIR --max-seq-len 1024 --tokens 2T``

The model already computes Qwen2 / Qwen2-MoE math with Hugging Face parameter names, so an export
moves the same fp32 tensors (renamed, split, concatenated or transposed) and never trains or
approximates. What a format cannot express is a one-line error, never a silent change: token dropping
(``capacity_factor > 0``) for both, which are dropless, and a router bias (``moe.router_bias``), which neither
has. The router z-loss is training-only and not exported; an import sets it to 0. A tied ``lm_head`` is stored
once, as the embedding. Outputs are written to a temporary sibling and renamed into place, readable by others
(directories 0755, files 0644); an import's ``provenance.json`` names the source files and their sha256. A
Hugging Face export also carries the corpus tokenizer the checkpoint was trained with (``--tokenizer`` gives it
for a checkpoint whose run record names none, such as an import; without one the export is an error) and a
``generation_config.json``, so ``AutoTokenizer`` / ``AutoModelForCausalLM`` load it and ``generate`` runs.
An import from Hugging Face also reads dense Llama and Mistral models (the parent of an upcycling study);
``--max-seq-len`` sets the context it is trained and evaluated at, and ``--tokens`` states its pre-training
tokens (recorded as its D1 and, at our FLOP convention, its sunk compute; unstated, both stay unknown).
The layouts and their decisions: ``stages.interop.hf``, ``stages.interop.hf_config``, ``stages.interop.nanotron``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.core.cli import ArgumentParser, UserError, parse_tokens, run
from stages.interop.hf import export_hf, import_hf
from stages.interop.nanotron import export_nanotron, import_nanotron
from stages.model.compute import FLOP_CONVENTIONS
from stages.model.config import ModelConfig

FORMATS = {"hf": (export_hf, import_hf), "nanotron": (export_nanotron, import_nanotron)}


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory to read (ours, or --from's format)")
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=sorted(FORMATS), help="write our checkpoint in this format")
    direction.add_argument("--from", dest="source", choices=sorted(FORMATS), help="read a checkpoint in this format")
    p.add_argument("--out", required=True, help="directory to write (replaced atomically)")
    p.add_argument(
        "--tokenizer",
        help="--to hf: the tokenizer.json (or a folder holding one) the checkpoint was trained with; "
        "default: the corpus tokenizer named by its run record",
    )
    p.add_argument(
        "--max-seq-len",
        type=int,
        help="--from hf: context length of the imported model, the sequence length it will be trained and "
        "evaluated at (default: its max_position_embeddings); a sliding window must cover it",
    )
    p.add_argument(
        "--tokens",
        help="--from hf: tokens the model was pre-trained on, as its authors state them (e.g. 2T): its D1 and "
        "sunk compute in the runs table (default: unknown, left empty there)",
    )
    p.add_argument(
        "--flops-convention",
        choices=FLOP_CONVENTIONS,
        default="6N",
        help="--from hf: FLOPs per token the sunk compute of --tokens is counted with",
    )
    p.add_argument("--run-id", help="--from hf: identity recorded in the run record (default: --out)")
    args = p.parse_args(argv)
    checkpoint, out = Path(args.checkpoint), Path(args.out)
    if args.tokenizer is not None and args.to != "hf":
        raise UserError("--tokenizer: only an export --to hf carries a tokenizer")
    import_only = {"--max-seq-len": args.max_seq_len, "--tokens": args.tokens, "--run-id": args.run_id}
    for flag, value in import_only.items():
        if value is not None and args.source != "hf":
            raise UserError(f"{flag}: only an import --from hf takes it")
    if args.max_seq_len is not None and args.max_seq_len < 1:
        raise UserError(f"--max-seq-len: must be positive, got {args.max_seq_len}")
    if not checkpoint.is_dir():
        raise UserError(f"--checkpoint {checkpoint}: not a directory")
    export, import_ = FORMATS[args.to or args.source]
    if args.to:
        moe = ModelConfig.read(checkpoint).moe
        if moe is not None and moe.router_bias:
            raise UserError(
                f"--checkpoint {checkpoint}: moe.router_bias: {args.to}'s MoE router has no bias (an expert expansion "
                "with utility selection keeps its offsets there); it cannot be exported without changing the function"
            )
    if args.to == "hf":
        export_hf(checkpoint, out, tokenizer=Path(args.tokenizer) if args.tokenizer is not None else None)
    elif args.to:
        export(checkpoint, out)
    elif args.source == "hf":
        tokens = parse_tokens(args.tokens, "--tokens") if args.tokens is not None else None
        import_hf(checkpoint, out, args.max_seq_len, tokens, args.flops_convention, args.run_id)
    else:
        import_(checkpoint, out)
    what = f"exported to {args.to}" if args.to else f"imported from {args.source}"
    print(f"{out}: {what} ({checkpoint})")


if __name__ == "__main__":
    run(main)
