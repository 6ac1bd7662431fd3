"""The validation split: whole documents held out per source, in a deterministic hash order (never random
lines), until each source has the requested share of its characters held out."""

from __future__ import annotations

import hashlib
from collections import defaultdict

from stages.core.cli import UserError
from stages.corpus.sources import Document


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
