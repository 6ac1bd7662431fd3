"""Building a corpus directory in three steps that the workflow runs as separate jobs:

1. ``plan_corpus`` (rule ``data_tokenizer``): one pass over the documents decides the split (exact duplicates
   removed, whole documents held out, long documents cut into pieces; ``stages.corpus.split``), a second trains
   the tokenizer on a bounded sample of the training split (or copies a parent's); writes ``tokenizer.json`` and,
   in the parts folder, ``plan.npy`` (status and starting character of each document: 9 bytes per document) and
   ``plan.json``.
2. ``encode_shard`` (rule ``data_shard``, N jobs in parallel): shard ``k`` of ``n`` encodes the documents whose
   first character falls in the k-th n-th of the corpus's kept characters (a contiguous range of documents, so
   the shards balance by text, not by document count) into ``<k>.train.bin`` / ``<k>.val.bin`` and ``<k>.json``.
3. ``merge_shards`` (rule ``data``): concatenates the parts in shard order and writes ``train.bin``, ``val.bin``
   and ``manifest.json``.

Each document is encoded on its own, so concatenating the shards in order gives the same bytes for any number of
shards; the manifest does not record the number. Memory per job: the plan's per-document arrays plus one
encoding batch (``stages.corpus.tokenizer.BATCH_CHARS``) and the largest document as its source parses it.
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.artifacts import atomic_path, read_json, sha256_file, write_json
from stages.core.cli import UserError
from stages.corpus.shards import MANIFEST, TOKEN_DTYPES, token_dtype
from stages.corpus.sources import Document, Stream
from stages.corpus.split import DUPLICATE, TOLERANCE, TRAIN, VAL, cut_long_documents, doc_key, plan_split
from stages.corpus.tokenizer import EOT, encode_stream, load_tokenizer, tokenizer_size, train_tokenizer

PLAN, PLAN_ARRAYS = "plan.json", "plan.npy"
_PLAN_DTYPE = np.dtype([("status", "u1"), ("start", "<i8")])


def documents(streams: list[Stream], max_chars: int) -> Iterator[Document]:
    """Every document of the corpus in order, long ones cut into pieces (the unit the split and shards use)."""
    for stream in streams:
        yield from cut_long_documents(stream.documents(), max_chars)


def _in_sample(doc: Document, share: float) -> bool:
    """A deterministic ``share`` of the documents (all when ``share >= 1``), independent of the split's order."""
    return share >= 1 or int.from_bytes(doc_key(doc)[24:], "big") < share * 2**64


def _identity(streams: list[Stream]) -> list[dict[str, Any]]:
    """What a later step must read again: the streams' packages and files with their sha256."""
    return [s.record for s in streams]


def plan_corpus(
    streams: list[Stream],
    out: Path,
    parts: Path,
    *,
    val_fraction: float,
    max_chars: int,
    vocab_size: int | None,
    tokenizer_chars: int,
    pretrained=None,  # stages.interop.hf_config's HFTokenizer, or None to train a byte-level BPE
    log=print,
) -> None:
    counts = {s.name: [0, 0] for s in streams}

    def counted() -> Iterator[Document]:
        for stream in streams:
            for doc in stream.documents():
                counts[stream.name][0] += 1
                counts[stream.name][1] += len(doc.text)
                yield doc

    plan = plan_split(cut_long_documents(counted(), max_chars), val_fraction)  # pass 1: hashes and lengths only
    log(
        f"split: {plan.train_documents} train / {plan.val_documents} val documents, "
        f"{plan.duplicates} exact duplicates removed, {plan.near_duplicates} near duplicates kept"
    )
    if misses := plan.misses():
        log(
            f"warning: held-out share of {', '.join(misses)} misses val_fraction {val_fraction} by more than "
            f"{TOLERANCE:.0%} of it (documents too few or too long; lower data.max_document_chars)"
        )
    share = tokenizer_chars / max(plan.train_chars, 1)
    if pretrained is not None:
        tok, eot_id = load_tokenizer(pretrained.path, pretrained.eos, pretrained.eos_id)
        ids = tokenizer_size(tok)
        vocab = vocab_size or pretrained.vocab_size or ids
        if vocab < ids:
            raise UserError(f"--vocab-size {vocab}: fewer than the {ids} ids of {pretrained.path}")
        tokenizer_bytes = pretrained.path.read_bytes()
        info = {
            "type": "pretrained",
            "library": "tokenizers",
            "source": str(pretrained.path),
            "eos": tok.id_to_token(eot_id),
            "ids": ids,
        }
    else:
        status = iter(plan.status)
        sample = (
            d for d in documents(streams, max_chars) if next(status) == TRAIN and _in_sample(d, share)
        )  # pass 2 (documents and statuses in the same order)
        tok = train_tokenizer(sample, vocab_size)
        log(f"tokenizer trained on {min(1.0, share):.3f} of the training split's {plan.train_chars:,} chars")
        vocab, eot_id = tok.get_vocab_size(), tok.token_to_id(EOT)
        tokenizer_bytes = tok.to_str(pretty=True).encode("utf-8")  # the bytes Tokenizer.save writes
        info = {
            "type": "byte-level BPE",
            "library": "tokenizers",
            "min_frequency": 2,
            "special": [EOT],
            "sample_chars": tokenizer_chars,
            "sample_share": min(1.0, share),
        }
    kept = np.where(plan.status == DUPLICATE, 0, plan.chars)
    arrays = np.empty(len(plan.status), dtype=_PLAN_DTYPE)
    arrays["status"] = plan.status
    arrays["start"] = np.cumsum(kept) - kept  # kept characters before each document
    with atomic_path(parts / PLAN_ARRAYS) as tmp, open(tmp, "wb") as f:
        np.save(f, arrays, allow_pickle=False)
    with atomic_path(out / "tokenizer.json") as tmp:
        tmp.write_bytes(tokenizer_bytes)
    records = [{**s.record, "documents": counts[s.name][0], "chars": counts[s.name][1]} for s in streams]
    write_json(
        parts / PLAN,
        {
            "identity": _identity(streams),
            "documents": len(plan.status),
            "kept_chars": int(kept.sum()),
            "vocab_size": vocab,
            "eot_id": eot_id,
            "token_dtype": token_dtype(vocab),
            "pieces": pretrained is None,
            "val_fraction": val_fraction,
            "max_document_chars": max_chars,
            "sources": records,
            "tokenizer": info,
            "tokenizer_sha256": sha256_file(out / "tokenizer.json"),
            "duplicates": {
                "exact_removed": plan.duplicates,
                "exact_removed_chars": plan.duplicate_chars,
                "near": plan.near_duplicates,
                "val_near_in_train": plan.val_near_duplicates_in_train,
            },
            "pieces_added": len(plan.status) - sum(n for n, _ in counts.values()),
            "split_misses": plan.misses(),
        },
    )


def read_plan(parts: Path, out: Path) -> tuple[dict[str, Any], np.ndarray]:
    plan = read_json(parts / PLAN)
    try:
        arrays = np.load(parts / PLAN_ARRAYS, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserError(f"{parts / PLAN_ARRAYS}: cannot read ({err}); rerun the data_tokenizer step") from None
    if arrays.dtype != _PLAN_DTYPE or len(arrays) != plan["documents"]:
        raise UserError(f"{parts / PLAN_ARRAYS}: does not match {parts / PLAN}; rerun the data_tokenizer step")
    if sha256_file(out / "tokenizer.json") != plan["tokenizer_sha256"]:
        raise UserError(f"{out / 'tokenizer.json'}: not the tokenizer of {parts / PLAN}; rerun data_tokenizer")
    return plan, arrays


def shard_of(arrays: np.ndarray, kept_chars: int, shards: int) -> np.ndarray:
    """The shard of every document: the n-th of the kept characters its first character falls in."""
    return np.minimum(arrays["start"] * shards // max(kept_chars, 1), shards - 1)


def encode_shard(streams: list[Stream], out: Path, parts: Path, shard: int, shards: int) -> None:
    if not 0 <= shard < shards:
        raise UserError(f"--shard {shard}: must be in 0..{shards - 1} (--shards {shards})")
    plan, arrays = read_plan(parts, out)
    if _identity(streams) != plan["identity"]:
        raise UserError(f"data: the sources or files differ from those of {parts / PLAN}; rerun data_tokenizer")
    tok, eot_id = load_tokenizer(out / "tokenizer.json", eos_id=plan["eot_id"])
    owner = shard_of(arrays, plan["kept_chars"], shards)
    mine = np.flatnonzero(owner == shard)
    lo, hi = (int(mine[0]), int(mine[-1]) + 1) if len(mine) else (0, 0)
    status = arrays["status"]
    pending: deque[int] = deque()
    total = {"documents": 0}

    def selected() -> Iterator[Document]:
        for i, doc in enumerate(documents(streams, plan["max_document_chars"])):
            total["documents"] = i + 1
            if i >= len(status):
                break
            if i >= hi:
                return
            if i >= lo and status[i] != DUPLICATE:
                pending.append(int(status[i]))
                yield doc

    counts = {split: {"tokens": 0, "chars": 0, "documents": 0} for split in ("train", "val")}
    val_names: list[str] = []
    with ExitStack() as stack:
        files = {
            split: stack.enter_context(open(stack.enter_context(atomic_path(parts / f"{shard}.{split}.bin")), "wb"))
            for split in ("train", "val")
        }
        dtype = TOKEN_DTYPES[plan["token_dtype"]]
        for batch in encode_stream(tok, selected(), eot_id=eot_id, dtype=dtype, pieces=plan["pieces"]):
            for doc, ids in batch:
                split = "val" if pending.popleft() == VAL else "train"
                files[split].write(ids.tobytes())
                counts[split]["tokens"] += int(ids.size)
                counts[split]["chars"] += len(doc.text)
                counts[split]["documents"] += 1
                if split == "val":
                    val_names.append(f"{doc.source}/{doc.doc_id}")
        if total["documents"] > len(status) or (hi == len(status) and total["documents"] != len(status)):
            raise UserError(f"data: the documents differ from the {len(status)} of {parts / PLAN}; rerun data steps")
    write_json(parts / f"{shard}.json", {"counts": counts, "val_documents": val_names})


def merge_shards(out: Path, parts: Path, shards: int, code: str) -> dict[str, Any]:
    """Concatenate the shards in order into ``train.bin`` / ``val.bin`` and write the manifest."""
    plan = read_json(parts / PLAN)
    if sha256_file(out / "tokenizer.json") != plan["tokenizer_sha256"]:
        raise UserError(f"{out / 'tokenizer.json'}: not the tokenizer of {parts / PLAN}; rerun the data steps")
    counts = {split: {"tokens": 0, "chars": 0, "documents": 0} for split in ("train", "val")}
    val_names: list[str] = []
    for k in range(shards):
        part = read_json(parts / f"{k}.json")
        for split in counts:
            for key in counts[split]:
                counts[split][key] += part["counts"][split][key]
        val_names += part["val_documents"]
    for split in ("train", "val"):
        with atomic_path(out / f"{split}.bin") as tmp, open(tmp, "wb") as dst:
            for k in range(shards):
                with open(parts / f"{k}.{split}.bin", "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 22)
    itemsize = TOKEN_DTYPES[plan["token_dtype"]].itemsize
    for split in ("train", "val"):
        if (out / f"{split}.bin").stat().st_size != counts[split]["tokens"] * itemsize:
            raise UserError(f"{out / f'{split}.bin'}: size does not match the shards' token counts; rerun data steps")
    manifest = {
        "vocab_size": plan["vocab_size"],
        "eot_id": plan["eot_id"],
        "token_dtype": plan["token_dtype"],
        "val_fraction": plan["val_fraction"],
        "files": {
            split: {"name": f"{split}.bin", "sha256": sha256_file(out / f"{split}.bin"), "tokens": c["tokens"]}
            for split, c in counts.items()
        }
        | {"tokenizer": {"name": "tokenizer.json", "sha256": plan["tokenizer_sha256"]}},
        "sources": plan["sources"],
        "split": {
            "train_documents": counts["train"]["documents"],
            "val_documents": sorted(val_names),
            "train_chars": counts["train"]["chars"],
            "val_chars": counts["val"]["chars"],
            "duplicates": plan["duplicates"],
            "max_document_chars": plan["max_document_chars"],
            "pieces_added": plan["pieces_added"],  # documents added by cutting long ones into pieces
            "misses_val_fraction": plan["split_misses"],
        },
        "tokenizer": plan["tokenizer"],
        "code_hash": code,
    }
    write_json(out / MANIFEST, manifest)
    return manifest
