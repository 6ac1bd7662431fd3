"""The tokenizer: byte-level BPE with one end-of-text token, trained deterministically on the training
split (or a parent model's ``tokenizer.json``, read as it is), and the encoding of documents into token ids
(each document followed by the end-of-text token). Both stream: the trainer pulls documents from an
iterator, the encoder takes a bounded batch of documents at a time (``encode_stream``) and encodes its
pieces in parallel. A pretrained tokenizer encodes whole documents: its normalizer or pre-tokenizer may
treat the start of a text specially (a prefix space, a metaspace), so pieces would not add up."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

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


def tokenizer_size(tok) -> int:
    """Ids the tokenizer can produce: one more than its largest id, added (special) tokens included."""
    return 1 + max(tok.get_vocab(with_added_tokens=True).values(), default=-1)


def load_tokenizer(path: Path, eos: str | None = None, eos_id: int | None = None):  # -> (Tokenizer, int)
    """A pretrained ``tokenizer.json`` and the id that ends each document: the token ``eos`` names, else
    ``eos_id``, else our end-of-text token if the vocabulary has it (a tokenizer this project trained)."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises plain Exception subclasses with multi-line messages
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a tokenizers tokenizer.json ({reason})") from None
    if eos is not None:
        eot = tok.token_to_id(eos)
        if eot is None:
            raise UserError(f"{path}: its end-of-sequence token {eos!r} is not in the vocabulary")
    elif eos_id is not None:
        if not 0 <= eos_id < tokenizer_size(tok):
            raise UserError(f"{path}: eos_token_id {eos_id} is not an id of this tokenizer")
        eot = eos_id
    else:
        eot = tok.token_to_id(EOT)
        if eot is None:
            raise UserError(
                f"{path}: no end-of-sequence token to separate documents (no eos_token in tokenizer_config.json, "
                f"no eos_token_id in config.json, no {EOT!r} in the vocabulary)"
            )
    return tok, eot


def encode_stream(
    tok,
    docs: Iterable[Document],
    max_documents: int = BATCH_DOCUMENTS,
    max_chars: int = BATCH_CHARS,
    *,
    eot_id: int | None = None,
    dtype: np.dtype = TOKEN_DTYPE,
    pieces: bool = True,
) -> Iterator[list[tuple[Document, np.ndarray]]]:
    """Batches of ``(document, its token ids followed by the end-of-text token)``, in document order. A batch
    holds at most ``max_documents`` documents and stops growing once it has ``max_chars`` characters.
    ``eot_id`` is the separator (default: our end-of-text token), ``dtype`` the ids' type; ``pieces=False``
    encodes whole documents (a pretrained tokenizer, see the module docstring)."""
    eot = tok.token_to_id(EOT) if eot_id is None else eot_id
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= max_documents or chars >= max_chars:
            yield _encode_batch(tok, batch, eot, dtype, pieces)
            batch, chars = [], 0
    if batch:
        yield _encode_batch(tok, batch, eot, dtype, pieces)


def _encode_batch(
    tok, docs: list[Document], eot: int, dtype: np.dtype = TOKEN_DTYPE, pieces: bool = True
) -> list[tuple[Document, np.ndarray]]:
    parts = [_PIECE_BOUNDARY.split(doc.text) if pieces else [doc.text] for doc in docs]
    encodings = tok.encode_batch([p for split in parts for p in split], add_special_tokens=False)
    out, at = [], 0
    for doc, split in zip(docs, parts, strict=True):
        ids = [np.asarray(enc.ids, dtype=dtype) for enc in encodings[at : at + len(split)]]
        at += len(split)
        out.append((doc, np.concatenate([*ids, np.asarray([eot], dtype=dtype)])))
    return out


def encode_documents(tok, docs: Iterable[Document]) -> np.ndarray:
    """Token ids of the documents, each followed by the end-of-text token."""
    out = [ids for batch in encode_stream(tok, docs) for _, ids in batch]
    return np.concatenate(out) if out else np.zeros(0, dtype=TOKEN_DTYPE)
