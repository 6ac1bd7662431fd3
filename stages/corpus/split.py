"""The validation split: whole documents held out per source, in a deterministic hash order (never random
lines), until each source has the requested share of its characters held out.

Streaming form: one pass over the documents keeps only each document's sha256 key and length (40 bytes per
document of a source, never its text), then decides the held-out keys; later passes ask :meth:`SplitPlan.is_val`
per document. The held-out set is exactly the one of sorting each source's documents by key and holding them
out in that order until ``val_fraction`` of its characters (keeping at least one document for training).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from stages.core.cli import UserError
from stages.corpus.sources import Document

_KEY_BYTES = 32


def doc_key(doc: Document) -> bytes:
    """The document's place in the hold-out order (sha256 of source and id)."""
    return hashlib.sha256(f"{doc.source}\x1f{doc.doc_id}".encode()).digest()


@dataclass
class SourceSplit:
    """What the planning pass saw of one source."""

    documents: int = 0
    chars: int = 0
    val_documents: int = 0
    val_chars: int = 0


@dataclass
class SplitPlan:
    """The held-out document keys and the counts of every source."""

    val_fraction: float
    val_keys: set[bytes] = field(default_factory=set)
    sources: dict[str, SourceSplit] = field(default_factory=dict)

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


def plan_split(docs: Iterable[Document], val_fraction: float) -> SplitPlan:
    """One pass over ``docs``: per source, hold out whole documents in hash order until ``val_fraction`` of
    its characters. Memory: the key and length of each document, not its text."""
    keys: dict[str, bytearray] = {}
    lengths: dict[str, array] = {}
    total = 0
    for doc in docs:
        if doc.source not in keys:
            keys[doc.source], lengths[doc.source] = bytearray(), array("q")
        keys[doc.source] += doc_key(doc)
        lengths[doc.source].append(len(doc.text))
        total += 1
    plan = SplitPlan(val_fraction)
    for source in sorted(keys):
        raw = bytes(keys.pop(source))
        key = np.frombuffer(raw, dtype=f"S{_KEY_BYTES}")
        length = np.frombuffer(lengths.pop(source), dtype=np.int64)
        order = np.argsort(key, kind="stable")
        before = np.concatenate(([0], np.cumsum(length[order])[:-1]))  # characters held before each document
        target = val_fraction * int(length.sum())
        n_held = min(int(np.count_nonzero(before < target)), len(key) - 1)  # keep one document for training
        held = order[:n_held]
        plan.val_keys.update(raw[i * _KEY_BYTES : (i + 1) * _KEY_BYTES] for i in held.tolist())
        plan.sources[source] = SourceSplit(len(key), int(length.sum()), n_held, int(length[held].sum()))
    if not plan.train_documents or not plan.val_documents:
        raise UserError(
            f"data: cannot split {total} documents into train and validation with val_fraction={val_fraction}; "
            "add documents (each .txt file is one document) or change data.val_fraction"
        )
    return plan


def split_documents(docs: list[Document], val_fraction: float) -> tuple[list[Document], list[Document]]:
    """Hold out whole documents: per source, in hash order, until ``val_fraction`` of its characters."""
    plan = plan_split(docs, val_fraction)
    train = [d for d in docs if not plan.is_val(d)]
    val = [d for d in docs if plan.is_val(d)]
    return train, val
