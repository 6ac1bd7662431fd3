"""The Jargon File 4.4.7: the front matter, one document per lexicon letter, and the appendices."""

from __future__ import annotations

import gzip
import re

from stages.corpus.sources.archive import Corrupt, Reader, member

_JARGON = "usr/share/doc/jargon-text/jargon.txt.gz"
_JARGON_LETTER = re.compile(r"  ([0A-Z])")
_JARGON_ENTRY = re.compile(r"   :(.+?):")
_JARGON_XREF = re.compile(r"\{([^{};]+)\}")
_INDENT = re.compile(r"^   ", re.M)


def _parse(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """``front`` (introduction), one document per lexicon letter (``0`` for digits and symbols, A..Z),
    and ``appendices``.

    In the lexicon, entries start with ``:headword:``; the lines between a letter heading and its first
    entry only list that letter's headwords and are dropped, as are the tables of contents before the
    appendices. ``{cross-references}`` lose their braces, the 3-space page indent is removed and the
    no-break spaces in headings become spaces.
    """
    lines = gzip.decompress(member(files, _JARGON)).decode().replace("\xa0", " ").split("\n")
    glossary = _line_number(lines, "Glossary")
    part_three = _line_number(lines, "Part III. Appendices", centred=True)
    appendix = _line_number(lines, "Appendix A. Hacker Folklore")
    letters: dict[str, list[str]] = {}
    letter, in_entry = "0", False
    for line in lines[glossary + 1 : part_three]:
        if heading := _JARGON_LETTER.fullmatch(line):
            letter, in_entry = heading[1], False
        elif start := _JARGON_ENTRY.match(line):
            in_entry = True
            letters.setdefault(letter, []).append(start[1] + line[start.end() :])
        elif in_entry:
            letters[letter].append(line)
    sections = [("front", "\n".join(lines[:glossary]))]
    sections += [(key, "\n".join(entries)) for key, entries in letters.items()]
    sections.append(("appendices", "\n".join(lines[appendix:])))
    return [(key, _JARGON_XREF.sub(r"\1", _INDENT.sub("", text))) for key, text in sections]


def _line_number(lines: list[str], heading: str, centred: bool = False) -> int:
    """Where a heading stands on its own line. Tables of contents repeat headings indented, so only a
    ``centred`` heading may be matched with its indent."""
    for number, line in enumerate(lines):
        if (line.strip() if centred else line) == heading:
            return number
    raise Corrupt(f"jargon.txt has no heading {heading!r}")


READER = Reader(_JARGON, _parse)
