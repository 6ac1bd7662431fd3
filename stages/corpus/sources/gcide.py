"""GCIDE, the GNU Collaborative International Dictionary of English (dictd format): one document per
initial letter."""

from __future__ import annotations

import gzip
import re
import unicodedata

from stages.corpus.sources.archive import Corrupt, Reader, member

_GCIDE = "usr/share/dictd/gcide."
_DICTD_DIGITS = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_GCIDE_PRON = re.compile(r" ?\\[^\\]*\\(?P<punct>[,.;:]?)")
_GCIDE_SOURCE = re.compile(r"\[(?:1913\s+Webster|Webster\s+1913|WordNet|PJC)[^\]]*\]")
_GCIDE_STRAY_HEADWORD = re.compile(_GCIDE_SOURCE.pattern + r"[^\n]*\s*\Z")


def _dictd_number(digits: str) -> int:
    """dictd index numbers are base 64 written with the base64 alphabet, most significant digit first."""
    value = 0
    for digit in digits:
        if digit not in _DICTD_DIGITS:
            raise Corrupt(f"gcide.index: bad number {digits!r}")
        value = value * 64 + _DICTD_DIGITS[digit]
    return value


def _initial(entry: str) -> str:
    """A..Z from an entry's first letter or digit (accents folded); digits and the rest: 'other'."""
    for ch in unicodedata.normalize("NFKD", entry[:200]):
        if ch.isalnum():
            return ch.upper() if ch.isascii() and ch.isalpha() else "other"
    return "other"


def _clean_gcide(entry: str) -> str:
    """Drop ``\\syl*la*ble\\`` pronunciations, source tags like ``[1913 Webster]`` (and the next
    entry's headword that the dictd conversion often leaves after the last one), ``{}`` around
    cross-references and the hanging indentation. GCIDE's 7-bit accent codes (``['e]``) are kept as
    written: the package carries no table for them."""
    text = _GCIDE_STRAY_HEADWORD.sub("", entry)
    text = _GCIDE_PRON.sub(lambda m: m["punct"] or " ", text)  # "Marque \\Marque\\, n." -> "Marque, n."
    text = _GCIDE_SOURCE.sub("", text).replace("{", "").replace("}", "")
    return "\n".join(" ".join(line.split()) for line in text.split("\n"))


def _parse(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """Entries located through gcide.index (headword, offset, length), grouped by their initial.

    An entry is listed under each of its headwords and sub-entries, so spans are deduplicated, and it
    is grouped by the headword it starts with. The ``00-`` entries are the database's licence and
    build notes, not dictionary text. Three stray cp1252 bytes are replaced rather than guessed.
    """
    data = gzip.decompress(member(files, _GCIDE + "dict.dz"))
    spans = set()
    for line in member(files, _GCIDE + "index").decode().splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            raise Corrupt(f"gcide.index: bad line {line[:60]!r}")
        if not fields[0].startswith("00-"):
            spans.add((_dictd_number(fields[1]), _dictd_number(fields[2])))
    groups: dict[str, list[str]] = {}
    for offset, length in sorted(spans):
        if offset + length > len(data):
            raise Corrupt(f"gcide.index: an entry runs past the end of gcide.dict.dz (byte {offset + length})")
        entry = data[offset : offset + length].decode("utf-8", "replace")
        groups.setdefault(_initial(entry), []).append(_clean_gcide(entry))
    return [(key, "\n\n".join(groups[key])) for key in sorted(groups)]


READER = Reader(_GCIDE, _parse)
