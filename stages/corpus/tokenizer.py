"""The tokenizer: byte-level BPE with one end-of-text token, trained deterministically on the training
split, and the encoding of documents into uint16 token ids (each document followed by the end-of-text
token)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from stages.core.cli import UserError
from stages.corpus.shards import TOKEN_DTYPE
from stages.corpus.sources import Document

EOT = "<|endoftext|>"
# split points inside a document that leave the byte-level pre-tokenisation unchanged: after a newline run,
# before the next non-space character (so encoding the pieces equals encoding the whole text)
_PIECE_BOUNDARY = re.compile(r"(?<=\n)(?=\S)")


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
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
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
