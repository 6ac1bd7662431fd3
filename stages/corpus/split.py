"""The validation split: whole documents held out per source, in a deterministic hash order (never random
lines), until each source has the requested share of its characters held out; exact duplicates removed first.

Streaming form: one pass over the documents keeps, per document, its sha256 key, a 16-byte hash of its text, an
8-byte hash of its whitespace- and case-normalised text, its length and its source (67 bytes, never the text),
then decides:

- exact duplicates: a document whose text is byte-identical to an earlier document's (in corpus order, over all
  sources) is dropped, so no held-out document has a byte-identical copy in training;
- near duplicates (the same text up to case and whitespace) are counted, not removed: ``near_duplicates`` (among
  the kept documents) and ``val_near_duplicates_in_train`` (held-out documents with such a copy in training);
- the held-out set is exactly the one of sorting each source's kept documents by key and holding them out in
  that order until ``val_fraction`` of its characters (keeping at least one document for training).

A document longer than ``max_chars`` is cut into pieces (:func:`cut_long_documents`, at a line end, else a space)
before all of this, so one huge document cannot put most of a source into validation: a source's held-out share
then misses ``val_fraction`` by at most one piece of its text (``SplitPlan.misses`` names the sources that miss
it by more than ``TOLERANCE``).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from stages.core.cli import UserError
from stages.corpus.sources import Document

_KEY_BYTES = 32
MAX_DOCUMENT_CHARS = 1_000_000  # default longest piece of a document (characters); the shipped sources' longest: 882K
TOLERANCE = 0.5  # a source's held-out share may differ from val_fraction by this share of val_fraction
TRAIN, VAL, DUPLICATE = 0, 1, 2  # SplitPlan.status of a document


def doc_key(doc: Document) -> bytes:
    """The document's place in the hold-out order (sha256 of source and id)."""
    return hashlib.sha256(f"{doc.source}\x1f{doc.doc_id}".encode()).digest()


def _text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _near_hash(text: str) -> bytes:
    return hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8", "surrogatepass"), digest_size=8).digest()


def cut_long_documents(docs: Iterable[Document], max_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[Document]:
    """Documents of at most ``max_chars`` characters: a longer one becomes pieces ``<id>#0``, ``<id>#1``, ... cut
    after the last line end before the limit (else before the last space, else at the limit)."""
    if max_chars < 1:
        raise UserError(f"data.max_document_chars: must be positive, got {max_chars}")
    for doc in docs:
        text = doc.text
        if len(text) <= max_chars:
            yield doc
            continue
        pos = n = 0
        while pos < len(text):
            end = pos + max_chars
            if end < len(text):
                cut = text.rfind("\n", pos + 1, end)
                cut = cut + 1 if cut > pos else text.rfind(" ", pos + 1, end)
                end = cut if cut > pos else end
            yield Document(doc.source, f"{doc.doc_id}#{n}", text[pos:end])
            pos, n = end, n + 1


@dataclass
class SourceSplit:
    """What the planning pass saw of one source (documents and characters after removing exact duplicates)."""

    documents: int = 0
    chars: int = 0
    val_documents: int = 0
    val_chars: int = 0
    duplicates: int = 0


@dataclass
class SplitPlan:
    """The held-out document keys, the status of every document in corpus order and the counts of every source."""

    val_fraction: float
    val_keys: set[bytes] = field(default_factory=set)
    sources: dict[str, SourceSplit] = field(default_factory=dict)
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))  # TRAIN / VAL / DUPLICATE
    chars: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # each document's length
    duplicate_chars: int = 0
    near_duplicates: int = 0
    val_near_duplicates_in_train: int = 0

    def is_val(self, doc: Document) -> bool:
        return doc_key(doc) in self.val_keys

    @property
    def train_documents(self) -> int:
        return sum(s.documents - s.val_documents for s in self.sources.values())

    @property
    def val_documents(self) -> int:
        return sum(s.val_documents for s in self.sources.values())

    @property
    def train_chars(self) -> int:
        return sum(s.chars - s.val_chars for s in self.sources.values())

    @property
    def val_chars(self) -> int:
        return sum(s.val_chars for s in self.sources.values())

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.sources.values())

    def misses(self) -> list[str]:
        """Sources whose held-out share of characters differs from val_fraction by more than TOLERANCE of it."""
        return [
            f"{name} {s.val_chars / s.chars:.3f}"
            for name, s in sorted(self.sources.items())
            if s.chars and abs(s.val_chars / s.chars - self.val_fraction) > TOLERANCE * self.val_fraction
        ]


def plan_split(docs: Iterable[Document], val_fraction: float) -> SplitPlan:
    """One pass over ``docs``: drop exact duplicates, then per source hold out whole documents in hash order
    until ``val_fraction`` of its characters. Memory: 67 bytes per document, not its text."""
    keys, texts, nears = bytearray(), bytearray(), bytearray()
    lengths, source_of = array("q"), array("H")
    names: dict[str, int] = {}
    for doc in docs:
        keys += doc_key(doc)
        texts += _text_hash(doc.text)
        nears += _near_hash(doc.text)
        lengths.append(len(doc.text))
        source_of.append(names.setdefault(doc.source, len(names)))
    total = len(lengths)
    key = np.frombuffer(bytes(keys), dtype=f"S{_KEY_BYTES}")
    del keys
    length = np.frombuffer(lengths, dtype=np.int64).copy()
    source = np.frombuffer(source_of, dtype=np.uint16)
    keep = np.zeros(total, dtype=bool)
    keep[np.unique(np.frombuffer(bytes(texts), dtype="S16"), return_index=True)[1]] = True  # first copies
    del texts
    plan = SplitPlan(val_fraction, chars=length)
    held_keys: list[np.ndarray] = []
    for name in sorted(names):
        mine = np.flatnonzero((source == names[name]) & keep)
        k, n = key[mine], length[mine]
        order = np.argsort(k, kind="stable")
        before = np.concatenate(([0], np.cumsum(n[order])[:-1]))  # characters held before each document
        target = val_fraction * int(n.sum())
        n_held = min(int(np.count_nonzero(before < target)), len(k) - 1)  # keep one document for training
        held = order[:n_held]
        held_keys.append(k[held])
        raw = k[held].tobytes()  # (not tolist: numpy drops trailing zero bytes of S items)
        plan.val_keys.update(raw[i : i + _KEY_BYTES] for i in range(0, len(raw), _KEY_BYTES))
        duplicates = int(np.count_nonzero(source == names[name])) - len(mine)
        plan.sources[name] = SourceSplit(len(k), int(n.sum()), n_held, int(n[held].sum()), duplicates)
    val = keep & np.isin(key, np.concatenate(held_keys)) if held_keys else keep & False
    plan.status = np.where(keep, np.where(val, VAL, TRAIN), DUPLICATE).astype(np.uint8)
    plan.duplicate_chars = int(length[~keep].sum())
    near = np.frombuffer(bytes(nears), dtype="S8")
    plan.near_duplicates = int(keep.sum()) - len(np.unique(near[keep]))
    plan.val_near_duplicates_in_train = int(np.isin(near[val], near[keep & ~val]).sum())
    if not plan.train_documents or not plan.val_documents:
        raise UserError(
            f"data: cannot split {total} documents into train and validation with val_fraction={val_fraction}; "
            "add documents (each .txt file is one document) or change data.val_fraction"
        )
    return plan


def split_documents(docs: list[Document], val_fraction: float) -> tuple[list[Document], list[Document]]:
    """Hold out whole documents: per source, in hash order, until ``val_fraction`` of its characters; exact
    duplicates of an earlier document are in neither split."""
    plan = plan_split(docs, val_fraction)
    train = [d for d, s in zip(docs, plan.status, strict=True) if s == TRAIN]
    val = [d for d, s in zip(docs, plan.status, strict=True) if s == VAL]
    return train, val
