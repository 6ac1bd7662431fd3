"""A run's token stream as the tokenized-bytes files nanotron main trains on (datatrove's ``.ds`` format).

nanotron's Nanoset path (``NanosetDatasetsArgs`` in ``data_stages``; ``data/tokenized_bytes.py`` at the
pinned commit) reads a folder of ``*.ds`` files, in sorted name order, as consecutive non-overlapping windows
of ``seq_len + 1`` token ids (uint16 or uint32, little-endian), and its ``MegatronPretrainingSampler`` hands
optimizer step ``k`` the windows ``k * B .. (k + 1) * B - 1``. Our trainer draws windows of ``seq_len + 1``
tokens starting every ``seq_len`` tokens in a seeded order (:class:`stages.corpus.shards.TrainStream`), so
the conversion writes exactly the windows the torch backend would read for this run, in its order, one after
the other: nanotron then sees the same tokens at every step (a continued run's stream starts where its
parent stopped, as ours). The cost is a copy of the run's tokens (2 or 4 bytes each, plus one per window).

Beside ``stream.ds`` go datatrove's ``stream.ds.index`` (uint64 end offsets of its documents: each window is
one document, so positions read from it are 0..seq_len, the plain causal attention we train) and
``stream.ds.metadata`` (``<tokenizer>|<token bytes>``, the token count, a readable count), from which
nanotron's config reads the tokenizer and token size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core.cli import UserError
from stages.corpus.shards import TrainStream
from stages.interop.common import staged_dir

DS_FILE = "stream.ds"
CHUNK_WINDOWS = 4096  # windows gathered per write


def write_stream(stream: TrainStream, start: int, count: int, dtype: np.dtype, tokenizer_name: str, out: Path) -> Path:
    """Write windows ``start .. start + count - 1`` of ``stream`` as ``out/stream.ds`` (+ index, metadata)."""
    if count < 1:
        raise UserError(f"{out}: a nanotron data folder needs at least one window")
    width = stream.seq_len + 1
    with staged_dir(out) as tmp:
        with open(tmp / DS_FILE, "wb") as f:
            for first in range(start, start + count, CHUNK_WINDOWS):
                n = min(CHUNK_WINDOWS, start + count - first)
                f.write(stream.batch(first, n).numpy().astype(dtype.newbyteorder("<")).tobytes())
        ends = np.arange(1, count + 1, dtype="<u8") * width
        (tmp / f"{DS_FILE}.index").write_bytes(ends.tobytes())
        tokens = count * width
        (tmp / f"{DS_FILE}.metadata").write_text(f"{tokenizer_name}|{dtype.itemsize}\n{tokens}\n{tokens / 1e6:.1f}M\n")
    return out / DS_FILE


def read_windows(folder: Path, seq_len: int, token_size: int) -> np.ndarray:
    """Every window nanotron's reader yields from ``folder``: its ``*.ds`` files in sorted order, each cut into
    consecutive ``seq_len + 1``-token windows (a trailing partial window is never read). For tests and checks."""
    dtype = np.dtype("<u2" if token_size == 2 else "<u4")
    rows = []
    for path in sorted(folder.glob("*.ds")):
        tokens = np.fromfile(path, dtype=dtype)
        n = len(tokens) // (seq_len + 1)
        rows.append(tokens[: n * (seq_len + 1)].reshape(n, seq_len + 1))
    if not rows:
        raise UserError(f"{folder}: no *.ds files")
    return np.concatenate(rows).astype(np.int64)


def read_metadata(folder: Path) -> tuple[str, int, int]:
    """Tokenizer name, bytes per token and token count of ``stream.ds.metadata``."""
    path = folder / f"{DS_FILE}.metadata"
    try:
        head, count = path.read_text().splitlines()[:2]
        name, size = head.rsplit("|", 1)
        return name, int(size), int(count)
    except (OSError, ValueError):
        raise UserError(f"{path}: not a datatrove .ds.metadata file (tokenizer|bytes, token count)") from None
