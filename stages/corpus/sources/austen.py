"""Jane Austen's novels from the R package janeaustenr (an R lazy-load database), read without R."""

from __future__ import annotations

import gzip
import struct
import zlib

from stages.corpus.sources.archive import Corrupt, Reader, member

_AUSTEN = "usr/lib/R/site-library/janeaustenr/data/Rdata."


class _RReader:
    """Just enough of R's XDR serialization to read a lazy-load index and character vectors."""

    def __init__(self, data: bytes) -> None:
        if not data.startswith(b"X\n"):
            raise Corrupt("not an R XDR serialization")
        self.data, self.pos, self.refs = data, 2, []
        version = self.int()
        self.pos += 8  # writer and minimal reader versions
        if version == 3:
            name_length = self.int()  # then the native encoding's name
            self.pos += name_length

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def value(self) -> object:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & 0x200, flags & 0x400
        if kind == 254:  # NULL
            return None
        if kind == 255:  # reference to an earlier symbol
            return self.refs[(flags >> 8 or self.int()) - 1]
        if kind == 1:  # symbol: its name follows as a CHARSXP
            self.refs.append(self.value())
            return self.refs[-1]
        if kind == 2:  # pairlist: [(tag, value), ...]
            if has_attr:
                self.value()
            tag = self.value() if has_tag else None
            head = (tag, self.value())
            return [head, *(self.value() or [])]
        if kind == 9:  # CHARSXP; latin-1 flag is bit 2 of the levels, NA has length -1
            n = self.int()
            raw = self.data[self.pos : self.pos + max(n, 0)]
            self.pos += max(n, 0)
            return None if n == -1 else raw.decode("latin-1" if flags & (4 << 12) else "utf-8")
        n = self.int()
        if kind in (10, 13):  # logical, integer
            values: list = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
        elif kind == 14:  # double
            values = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        elif kind in (16, 19):  # character vector, list
            values = [self.value() for _ in range(n)]
        else:
            raise Corrupt(f"unsupported R object type {kind}")
        if has_attr:
            attributes = dict(self.value())
            if "names" in attributes:
                return dict(zip(attributes["names"], values, strict=True))
        return values


def _parse(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """The six novels, one document each, named as in the R package (``emma``, ``persuasion`` ...).

    Rdata.rdx (gzip) maps each object to (offset, length) in Rdata.rdb, where a blob is a big-endian
    uncompressed length followed by a zlib stream holding a character vector: one line per string.
    Underscores are Gutenberg's italics markers and are dropped.
    """
    index = _RReader(gzip.decompress(member(files, _AUSTEN + "rdx"))).value()
    if not isinstance(index, dict) or index.get("compressed") != [1]:
        raise Corrupt("Rdata.rdx is not a zlib lazy-load index")
    rdb = member(files, _AUSTEN + "rdb")
    docs = []
    for name, (offset, length) in sorted(index["variables"].items()):
        blob = rdb[offset : offset + length]
        raw = zlib.decompress(blob[4:])
        if len(blob) != length or struct.unpack(">I", blob[:4])[0] != len(raw):
            raise Corrupt(f"Rdata.rdb: object {name!r} is truncated")
        lines = _RReader(raw).value()
        if not isinstance(lines, list) or not all(line is None or isinstance(line, str) for line in lines):
            raise Corrupt(f"Rdata.rdb: object {name!r} is not a character vector")
        docs.append((name, "\n".join(line or "" for line in lines).replace("_", "")))
    return docs


READER = Reader(_AUSTEN, _parse)
