"""The user's own files (``data.files``): .txt is one document, .jsonl one per line, .parquet one per row."""

from __future__ import annotations

import json
from pathlib import Path

from stages.core.cli import UserError
from stages.corpus.sources.document import Document, tidy


def read_user_files(paths: list[str | Path], text_key: str = "text") -> list[Document]:
    """The ``files`` source: .txt is one document, .jsonl one per line, .parquet one per row."""
    if not paths:
        raise UserError("data.files: no files listed")
    docs: list[Document] = []
    seen: dict[str, Path] = {}
    for entry in paths:
        path = Path(entry)
        if path.name in seen:
            raise UserError(f"{path}: same file name as {seen[path.name]}, so their document ids would collide")
        seen[path.name] = path
        found = []
        for index, raw in enumerate(_read_user_file(path, text_key)):
            if text := tidy(raw):
                found.append(Document("files", f"{path.name}:{index}", text))
        if not found:
            raise UserError(f"{path}: no text")
        docs.extend(found)
    return docs


def _read_user_file(path: Path, text_key: str) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: no such file (data.files)")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [_read_utf8(path)]
    if suffix == ".jsonl":
        return _read_jsonl(path, text_key)
    if suffix == ".parquet":
        return _read_parquet(path, text_key)
    raise UserError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .txt, .jsonl or .parquet")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def _read_jsonl(path: Path, text_key: str) -> list[str]:
    texts = []
    for number, line in enumerate(_read_utf8(path).splitlines(), 1):
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
        texts.append(record[text_key])
    return texts


def _read_parquet(path: Path, text_key: str) -> list[str]:
    import pyarrow as pa  # imported here: the Snakefile imports this module while building the DAG
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        if text_key not in schema.names:
            raise UserError(f"{path}: no column {text_key!r} (columns: {', '.join(schema.names)})")
        column = pq.read_table(path, columns=[text_key]).column(text_key)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: cannot read as parquet ({' '.join(str(err).split())})") from None
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise UserError(f"{path}: column {text_key!r} holds {column.type}, not text")
    return [value or "" for value in column.to_pylist()]
