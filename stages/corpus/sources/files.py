"""The user's own files (``data.files``): .txt is one document, .jsonl / .jsonl.gz one per line, .parquet one
per row (the text in field ``text_field``, default ``text``).

An entry of ``data.files`` is a file, a folder (every supported file below it, sorted) or a glob (``*``, ``?``,
``[...]``, ``**``; relative to the working directory; matches sorted). Files are read one document at a time
(``iter_user_documents``), so a corpus larger than memory streams through the data stage. Torch- and
pyarrow-free at import: the Snakefile expands the entries (``expand_files``) while building the DAG.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from stages.core.cli import UserError
from stages.corpus.sources.document import Document, tidy

SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")
_KINDS = ", ".join(SUFFIXES)
_MAGIC = re.compile(r"[*?[]")
_PARQUET_BATCH = 1024  # rows read at a time


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), path.suffix.lower())


def _supported(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and _suffix(path) in SUFFIXES


def expand_entries(entries: list[str | Path], key: str = "data.files") -> list[tuple[Path, str]]:
    """``(file, document-id prefix)`` of every file the entries name, in order, each file once.

    A file keeps its name as id prefix; the files of a folder or glob are named relative to the folder (the
    glob's leading fixed folder), so equal names in different subfolders stay apart. A folder or glob that
    matches no supported file is a one-line error naming it.
    """
    found: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for entry in entries:
        text = str(entry)
        if _MAGIC.search(text):
            parts = Path(text).parts
            fixed = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
            base = Path(*parts[:fixed]) if fixed else Path(".")
            hits = sorted(glob.glob(text, recursive=True))
            matched = [(Path(p), Path(p).relative_to(base).as_posix()) for p in hits if _supported(Path(p))]
        elif Path(text).is_dir():
            base = Path(text)
            files = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(base)
                if not any(part.startswith(".") for part in Path(root).relative_to(base).parts)
                for name in names
            )
            matched = [(Path(p), Path(p).relative_to(base).as_posix()) for p in files if _supported(Path(p))]
        else:
            matched = [(Path(text), Path(text).name)]
        if not matched:
            raise UserError(f"{key}: {text!r} matches no {_KINDS} file")
        for path, name in matched:
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append((path, name))
    return found


def expand_files(entries: list[str | Path]) -> list[str]:
    """The files the entries of ``data.files`` name (the data rule's input, expanded at DAG time)."""
    return [str(path) for path, _ in expand_entries(entries)]


def iter_user_documents(entries: list[str | Path], text_key: str = "text") -> Iterator[Document]:
    """The ``files`` source, one document at a time: .txt is one document, .jsonl one per line, .parquet one
    per row; a document id is ``<name>:<record index>``."""
    if not entries:
        raise UserError("data.files: no files listed")
    files = expand_entries(entries)
    names: dict[str, Path] = {}
    for path, name in files:
        if name in names:
            raise UserError(f"{path}: same file name as {names[name]}, so their document ids would collide")
        names[name] = path
    for path, name in files:
        found = False
        for index, raw in _read_user_file(path, text_key):
            if text := tidy(raw):
                found = True
                yield Document("files", f"{name}:{index}", text)
        if not found:
            raise UserError(f"{path}: no text")


def read_user_files(paths: list[str | Path], text_key: str = "text") -> list[Document]:
    """All documents of :func:`iter_user_documents` (small corpora and tests)."""
    return list(iter_user_documents(paths, text_key))


def _read_user_file(path: Path, text_key: str) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise UserError(f"{path}: no such file (data.files)")
    suffix = _suffix(path)
    if suffix == ".txt":
        yield 0, _read_utf8(path)
    elif suffix in (".jsonl", ".jsonl.gz"):
        yield from _read_jsonl(path, text_key)
    elif suffix == ".parquet":
        yield from _read_parquet(path, text_key)
    else:
        raise UserError(f"{path}: unsupported file type {suffix or '(none)'!r}; use {_KINDS}")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            yield from enumerate(f, 1)
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{path}: cannot read ({' '.join(str(err).split()) or type(err).__name__})") from None


def _read_jsonl(path: Path, text_key: str) -> Iterator[tuple[int, str]]:
    index = 0
    for number, raw in _lines(path):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: line {number} is not UTF-8 text (byte {err.start}: {err.reason})") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {number} is not JSON ({err.msg})") from None
        if not isinstance(record, dict) or text_key not in record:
            raise UserError(f"{path}: line {number} has no {text_key!r} field")
        if not isinstance(record[text_key], str):
            raise UserError(f"{path}: line {number}: field {text_key!r} is not a string")
        yield index, record[text_key]
        index += 1


def _read_parquet(path: Path, text_key: str) -> Iterator[tuple[int, str]]:
    import pyarrow as pa  # imported here: the Snakefile imports this module while building the DAG
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        names = reader.schema_arrow.names
        if text_key not in names:
            raise UserError(f"{path}: no column {text_key!r} (columns: {', '.join(names)})")
        kind = reader.schema_arrow.field(text_key).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise UserError(f"{path}: column {text_key!r} holds {kind}, not text")
        index = 0
        for batch in reader.iter_batches(batch_size=_PARQUET_BATCH, columns=[text_key]):
            for value in batch.column(0).to_pylist():
                yield index, value or ""
                index += 1
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: cannot read as parquet ({' '.join(str(err).split())})") from None
