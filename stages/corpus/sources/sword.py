"""SWORD Bible and commentary modules (WEB Bible, Treasury of David, Matthew Henry): zlib blocks of OSIS
markup, one document per block."""

from __future__ import annotations

import html
import re
import struct
import zlib
from functools import partial

from stages.corpus.sources.archive import Corrupt, Reader, member

_MODULES = "usr/share/sword/modules/"

_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
_WORD_START = re.compile(r"<w\b|\w")
_BREAK_TAG = re.compile(r"<(?:/?(?:div|p|title|l|lg|lb|item|list|table|row|chapter|speaker)|milestone)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")


def _osis_to_text(osis: str) -> str:
    """OSIS markup to plain lines: footnotes dropped, block elements become line breaks.

    Words are ``<w>`` elements and a few touch (``God</w><note>..</note><w>created``, and ten verse
    boundaries in WEB), so a note followed by a word, or two touching words, get a space between them.
    """
    text = _NOTE.sub(lambda m: " " if _WORD_START.match(osis, m.end()) else "", osis)
    text = _BREAK_TAG.sub("\n", text.replace("</w><w", "</w> <w")).replace("</cell>", " ")
    lines = (" ".join(line.split()) for line in html.unescape(_TAG.sub("", text)).split("\n"))
    return "\n".join(line for line in lines if line)


def _parse(directory: str, ext: str, files: dict[str, bytes]) -> list[tuple[str, str]]:
    """One document per compressed block: a book for WEB and MHCC (BlockType=BOOK), a psalm for TDavid
    (BlockType=CHAPTER); ``ot-000`` and ``nt-000`` hold only an importer tag and come out empty.

    The block index ``*.?zs`` holds (offset, size, uncompressed size) for each zlib stream in ``*.?zz``.
    A block is its entries in the order osis2mod wrote them, so it reads as running prose and the verse
    index is not needed (its 16-bit entry sizes also overflow on WEB's long Greek Daniel). WEB also has
    five small blocks that no verse points at (1.4 KB of superseded verse copies); they stay as tiny
    documents rather than pull the verse index in.
    """
    docs = []
    for testament in ("ot", "nt"):
        stem = f"{directory}{testament}.{ext}"
        index, data = member(files, stem + "s"), member(files, stem + "z")
        if len(index) % 12:
            raise Corrupt(f"{stem}s is not a whole number of 12-byte records")
        for number, (offset, size, expected) in enumerate(struct.iter_unpack("<III", index)):
            raw = zlib.decompress(data[offset : offset + size])
            if len(raw) != expected:
                raise Corrupt(f"{stem}z block {number} has {len(raw)} bytes, its index says {expected}")
            docs.append((f"{testament}-{number:03d}", _osis_to_text(raw.decode())))
    return docs


def reader(path: str, ext: str) -> Reader:
    """The reader of the SWORD module ``path`` (under ``usr/share/sword/modules/``) whose block index and
    data files end in ``.{ext}s`` and ``.{ext}z``."""
    directory = _MODULES + path
    return Reader(directory, partial(_parse, directory, ext))
