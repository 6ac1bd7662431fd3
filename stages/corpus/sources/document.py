"""A document (the unit never split between training and validation) and the whitespace tidying that
every source applies to its text."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One unit of text that is never split between training and validation."""

    source: str
    doc_id: str
    text: str


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")


def tidy(text: str) -> str:
    """Modest whitespace normalisation shared by all sources: '\\n' endings, no trailing blanks or
    control characters, at most one empty line in a row (paragraph breaks survive)."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")
