"""fortune(6) cookie files: one document per file."""

from __future__ import annotations

import re

from stages.corpus.sources.archive import Reader

_FORTUNES = "usr/share/games/fortunes/"
_FORTUNE_SEPARATOR = re.compile(r"^%\n", re.M)


def _apply_backspaces(text: str) -> str:
    """Resolve typewriter overstrikes (``___\\b\\b\\bnot``): a backspace erases the character before it."""
    out: list[str] = []
    for ch in text:
        if ch != "\b":
            out.append(ch)
        elif out and out[-1] != "\n":
            out.pop()
    return "".join(out)


def _parse(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """One document per cookie file, fortunes separated by an empty line instead of ``%``. The
    ``.dat`` files are strfile indexes and the ``.u8`` names are links to the same text."""
    docs = []
    for name in sorted(files):
        base = name.removeprefix(_FORTUNES)
        if "/" in base or "." in base:
            continue
        text = files[name].decode()
        if "\b" in text:
            text = _apply_backspaces(text)
        fortunes = (part.strip("\n") for part in _FORTUNE_SEPARATOR.split(text))
        docs.append((base, "\n\n".join(f for f in fortunes if f.strip())))
    return docs


READER = Reader(_FORTUNES, _parse)
