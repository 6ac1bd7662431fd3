"""The tokenizer: byte-level BPE with one end-of-text token, trained deterministically on the training
split, and the encoding of documents into uint16 token ids (each document followed by the end-of-text
token). Both stream: the trainer pulls documents from an iterator, the encoder takes a bounded batch of
documents at a time (``encode_stream``) and encodes its pieces in parallel."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import numpy as np

from stages.core.cli import UserError
from stages.corpus.shards import TOKEN_DTYPE
from stages.corpus.sources import Document

EOT = "<|endoftext|>"
# split points inside a document that leave the byte-level pre-tokenisation unchanged: after a newline run,
# before the next non-space character (so encoding the pieces equals encoding the whole text)
_PIECE_BOUNDARY = re.compile(r"(?<=\n)(?=\S)")
BATCH_DOCUMENTS = 1024  # the encoder holds at most this many documents ...
BATCH_CHARS = 4_000_000  # ... and about this many characters (plus one document) at once


def _pieces(docs: Iterable[Document]) -> Iterator[str]:
    for doc in docs:
        yield from _PIECE_BOUNDARY.split(doc.text)


def train_tokenizer(docs: Iterable[Document], vocab_size: int):  # -> tokenizers.Tokenizer
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
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_pieces(docs), trainer=trainer)
    return tok


def encode_stream(
    tok, docs: Iterable[Document], max_documents: int = BATCH_DOCUMENTS, max_chars: int = BATCH_CHARS
) -> Iterator[list[tuple[Document, np.ndarray]]]:
    """Batches of ``(document, its token ids followed by the end-of-text token)``, in document order. A batch
    holds at most ``max_documents`` documents and stops growing once it has ``max_chars`` characters."""
    eot = tok.token_to_id(EOT)
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= max_documents or chars >= max_chars:
            yield _encode_batch(tok, batch, eot)
            batch, chars = [], 0
    if batch:
        yield _encode_batch(tok, batch, eot)


def _encode_batch(tok, docs: list[Document], eot: int) -> list[tuple[Document, np.ndarray]]:
    pieces = [_PIECE_BOUNDARY.split(doc.text) for doc in docs]
    encodings = tok.encode_batch([p for split in pieces for p in split], add_special_tokens=False)
    out, at = [], 0
    for doc, split in zip(docs, pieces, strict=True):
        ids = [i for enc in encodings[at : at + len(split)] for i in enc.ids]
        at += len(split)
        out.append((doc, np.asarray(ids + [eot], dtype=TOKEN_DTYPE)))
    return out


def encode_documents(tok, docs: Iterable[Document]) -> np.ndarray:
    """Token ids of the documents, each followed by the end-of-text token."""
    out = [ids for batch in encode_stream(tok, docs) for _, ids in batch]
    return np.concatenate(out) if out else np.zeros(0, dtype=TOKEN_DTYPE)
