"""Trace an output back to the corpus packages and the code that made it, verifying every link on the way.

A figure records the sha256 of the table, fits and metrics.csv files it drew (its PNG also that of its PDF, and
the PNG's own chunk checksums cover the PNG), a fit its table's sha256, a table row its checkpoint's sha256 and
the values of its eval.json, an eval.json the sha256 of the weights and of the tokens it measured, a checkpoint its
parent's weights and its corpus files, a corpus manifest its packages. :class:`Tracer` walks these links into an
indented tree, marking a link whose file changed since as MISMATCH (or MISSING) and keeping a one-line account of
each.

Run ids are relative to the study root: the folder that holds the runs table's ``tables/`` folder
(``results/<study>/`` for ``results/<study>/tables/runs.csv``), unless a root is given.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json, sha256_file
from stages.core.cli import UserError
from stages.core.record import RECORD, read_record

FIGURE_KEY = "provenance"  # PNG text chunk / PDF Keywords entry written by report.plots.common.save
PDF_DIGEST = "pdf_sha256"  # the PNG's record also holds the sha256 of the PDF written before it
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk of every PNG, its CRC included


class Tracer:
    """Walks the links of one output, printing an indented tree and counting mismatches."""

    def __init__(self, results_root: Path | None = None) -> None:
        self.root = results_root  # None: the study root of each runs table (see the module's docstring)
        self.lines: list[str] = []
        self.failures: list[str] = []  # one line per link that does not verify: the file and what is wrong
        self._seen: set[str] = set()

    @property
    def mismatches(self) -> int:
        return len(self.failures)

    def say(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text)

    def fail(self, path: Path, status: str) -> str:
        self.failures.append(f"{path}: {status}")
        return status

    def verify(self, path: Path, expected: str | None, source: Path | None = None) -> str:
        """``path`` against the sha256 ``source`` records for it (None: only shown)."""
        if not path.is_file():
            return self.fail(path, "MISSING" + (f" (named in {source})" if source else ""))
        if expected is None:
            return f"sha256 {sha256_file(path)[:12]}"
        actual = sha256_file(path)
        if actual != expected:
            where = f" with the sha256 in {source}" if source else ""
            return self.fail(path, f"MISMATCH{where} (recorded {str(expected)[:12]}, now {actual[:12]})")
        return f"sha256 {actual[:12]} ok"

    def same(self, path: Path, key: str, actual: Any, source: Path, recorded: Any) -> str:
        """A value ``path`` holds against the one ``source`` recorded from it (floats as written: repr round-trips)."""
        if recorded == actual or (_number(recorded) and _number(actual) and float(recorded) == float(actual)):
            return "ok"
        return self.fail(path, f"MISMATCH with {source} ({key} {actual} here, {recorded} there)")

    def trace(self, path: Path, depth: int = 0) -> None:
        if path.is_dir() or path.name in ("provenance.json", "model.safetensors", "config.json"):
            self.checkpoint(path if path.is_dir() else path.parent, depth)
        elif path.suffix in (".png", ".pdf"):
            self.figure(path, depth)
        elif path.name == "eval.json":
            self.evaluation(path, depth)
        elif path.name == "manifest.json":
            self.corpus(path, depth)
        elif path.suffix == ".csv":
            self.table(path, depth)
        elif path.suffix == ".json":
            self.fit(path, depth)
        else:
            raise UserError(f"{path}: not an output this tool can trace (figure, fit, runs.csv, eval.json, run dir)")

    def figure(self, path: Path, depth: int) -> None:
        """Both files of the figure (the PNG's checksums and its record of the PDF), then what they were drawn from."""
        png, pdf = path.with_suffix(".png"), path.with_suffix(".pdf")
        source = png if png.exists() else path
        record = figure_record(source)
        self.say(depth, f"{path}  figure {record.get('figure', '?')}")
        self.say(depth + 1, f"png {png}: {'ok' if png.exists() else self.fail(png, 'MISSING')}")
        if PDF_DIGEST in record:
            self.say(depth + 1, f"pdf {pdf}: {self.verify(pdf, record[PDF_DIGEST], source)}")
        else:  # drawn before PNGs recorded their PDF
            self.say(depth + 1, f"pdf {pdf}: {self.verify(pdf, None)} (not recorded)")
        runs = Path(_key(record, "runs", path))
        self.say(depth + 1, f"runs {runs}: {self.verify(runs, _key(record, 'runs_sha256', path), source)}")
        for fit_path, sha in sorted(record.get("fits", {}).items()):
            self.say(depth + 1, f"fit {fit_path}: {self.verify(Path(fit_path), sha, source)}")
            if Path(fit_path).is_file():
                self.fit(Path(fit_path), depth + 2, header=False)
        for metrics_path, sha in sorted(record.get("metrics", {}).items()):
            self.say(depth + 1, f"metrics {metrics_path}: {self.verify(Path(metrics_path), sha, source)}")
        if runs.is_file():
            self.table(runs, depth + 1)

    def fit(self, path: Path, depth: int, header: bool = True) -> None:
        fit = read_json(path)
        if not isinstance(fit, dict):
            raise UserError(f"{path}: not a fit JSON (expected an object)")
        if header:
            self.say(depth, f"{path}  fit of law {fit.get('law')}")
        self.say(depth + 1, f"params {json.dumps(fit.get('params'), sort_keys=True)}")
        table = fit.get("table")
        if table:
            self.say(depth + 1, f"table {table}: {self.verify(Path(table), fit.get('table_sha256'), path)}")
            if header:
                self.table(Path(table), depth + 1)

    def table(self, path: Path, depth: int) -> None:
        if str(path) in self._seen:
            self.say(depth, f"{path}: (traced above)")
            return
        self._seen.add(str(path))
        try:
            with open(path, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        except FileNotFoundError:
            raise UserError(f"{path}: file not found") from None
        root = self.root if self.root is not None else study_root(path)
        self.say(depth, f"{path}  {len(rows)} runs (run ids under {root})")
        for row in rows:
            run_id = _key(row, "run_id", path)
            run_dir = root / run_id
            status = self.verify(run_dir / "model.safetensors", row.get("checkpoint_sha256"), path)
            self.say(depth + 1, f"{run_id}  val_loss {_key(row, 'val_loss', path)}  weights {status}")
            self.row_evaluation(root / "eval" / run_id / "eval.json", row, path, depth + 2)
            if (run_dir / "provenance.json").is_file():
                self.checkpoint(run_dir, depth + 2, header=False)

    def row_evaluation(self, path: Path, row: dict[str, str], table: Path, depth: int) -> None:
        """The eval.json a table row was collected from: its values as the row has them, its digests verified."""
        if not path.is_file():
            self.say(depth, f"eval {path}: {self.fail(path, 'MISSING')}")
            return
        ev = eval_record(path)
        checks = [
            self.same(path, "val_loss", ev["val_loss"], table, row.get("val_loss")),
            self.same(path, "tokens", ev["tokens"], table, row.get("eval_tokens", ev["tokens"])),
            self.same(path, "checkpoint_sha256", ev["checkpoint_sha256"], table, row.get("checkpoint_sha256")),
        ]
        self.say(depth, f"eval {path}: values {'ok' if set(checks) == {'ok'} else 'MISMATCH'}")
        self.eval_links(path, ev, depth + 1)

    def eval_links(self, path: Path, ev: dict[str, Any], depth: int) -> None:
        """The two digests an eval.json records: the weights it evaluated and the tokens it measured on."""
        ckpt = Path(ev["checkpoint"])
        self.say(depth, f"checkpoint {ckpt}: {self.verify(ckpt / 'model.safetensors', ev['checkpoint_sha256'], path)}")
        tokens = Path(ev["tokens_file"])
        self.say(depth, f"tokens {tokens}: {self.verify(tokens, ev['tokens_sha256'], path)}")

    def evaluation(self, path: Path, depth: int) -> None:
        ev = eval_record(path)
        self.say(depth, f"{path}  val_loss {ev['val_loss']:.5f} on {ev['tokens']} tokens of {ev['tokens_file']}")
        self.eval_links(path, ev, depth + 1)
        ckpt = Path(ev["checkpoint"])
        if (ckpt / "provenance.json").is_file():
            self.checkpoint(ckpt, depth + 2, header=False)

    def checkpoint(self, directory: Path, depth: int, header: bool = True) -> None:
        record = read_record(directory)
        if header:
            status = self.verify(directory / "model.safetensors", record.weights_sha256 or None, directory / RECORD)
            self.say(depth, f"{directory}  {record.kind}  weights {status}")
        self.say(
            depth,
            f"run {record.run_id}  kind {record.kind}  tokens {record.tokens}  seed {record.seed}  "
            f"code {record.code_hash}",
        )
        if record.backend:
            self.say(depth + 1, f"trained by {record.backend}")
        for entry in reversed(record.lineage):
            self.say(
                depth + 1,
                f"<- {entry.run_id}  kind {entry.kind}  tokens {entry.tokens}  "
                f"weights {entry.weights_sha256[:12]}  code {entry.code_hash}",
            )
        if record.source:
            for name, sha in sorted(record.source.sha256.items()):
                path = Path(record.source.path) / name
                self.say(depth + 1, f"imported {path}: {self.verify(path, sha, directory / RECORD)}")
        if record.parent:
            path = Path(record.parent.path)
            status = self.verify(path / "model.safetensors", record.parent.weights_sha256, directory / RECORD)
            self.say(depth + 1, f"parent {path}: weights {status}")
            if (path / "provenance.json").exists() and str(path) not in self._seen:
                self._seen.add(str(path))
                self.checkpoint(path, depth + 2, header=False)  # the whole chain, down to the corpus
        if record.data.manifest:
            self.corpus(Path(record.data.manifest), depth + 1, dataclasses.asdict(record.data))

    def corpus(self, manifest_path: Path, depth: int, expected: dict[str, Any] | None = None) -> None:
        key = f"corpus:{manifest_path}"
        if key in self._seen:
            self.say(depth, f"corpus {manifest_path}: (traced above)")
            return
        self._seen.add(key)
        manifest = read_json(manifest_path)
        if not isinstance(manifest, dict):
            raise UserError(f"{manifest_path}: not a corpus manifest (expected an object)")
        self.say(depth, f"corpus {manifest_path}  vocab {manifest.get('vocab_size')}  code {manifest.get('code_hash')}")
        directory = manifest_path.parent
        for split, entry in sorted(manifest.get("files", {}).items()):
            recorded = entry.get("sha256")
            if expected and split == "train" and expected.get("train_sha256") not in (None, recorded):
                self.mismatches += 1
                self.say(depth + 1, f"{split}: MISMATCH with the checkpoint's record")
            name = _key(entry, "name", manifest_path)
            self.say(depth + 1, f"{split} {name}: {self.verify(directory / name, recorded, manifest_path)}")
        for source in manifest.get("sources", []):
            if source.get("kind") == "files":
                for f in source.get("files", []):
                    file = Path(_key(f, "path", manifest_path))
                    status = self.verify(file, _key(f, "sha256", manifest_path), manifest_path)
                    self.say(depth + 1, f"file {file}: {status}")
            else:
                self.say(
                    depth + 1,
                    f"package {source.get('package')}={source.get('version')} ({source.get('kind')})  "
                    f"sha256 {str(source.get('sha256'))[:12]}  {source.get('license', '')}",
                )


def study_root(table: Path) -> Path:
    """Where the run ids of a runs table live: the folder above its ``tables/`` folder, else ``results``."""
    return table.parent.parent if table.parent.name == "tables" else Path("results")


def _number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _key(mapping: dict[str, Any], key: str, path: Path) -> Any:
    """``mapping[key]``, or a one-line error naming the file that lacks it."""
    if not isinstance(mapping, dict) or mapping.get(key) is None:
        raise UserError(f"{path}: no {key!r} (damaged, or not written by this project)")
    return mapping[key]


def eval_record(path: Path) -> dict[str, Any]:
    """An eval.json with the keys the tracer follows, or a one-line error naming it."""
    ev = read_json(path)
    for key in ("val_loss", "tokens", "checkpoint", "checkpoint_sha256", "tokens_file", "tokens_sha256"):
        _key(ev, key, path)
    if not _number(ev["val_loss"]) or not isinstance(ev["tokens"], int):
        raise UserError(f"{path}: val_loss and tokens must be numbers (damaged?)")
    return ev


def figure_record(path: Path) -> dict[str, Any]:
    """The provenance record a figure carries (PNG text chunk or PDF Keywords); a PNG whose checksums fail (any
    changed byte) is a one-line error naming it."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    text = None
    if path.suffix == ".png":
        from PIL import Image

        try:
            with Image.open(path) as img:
                text = img.info.get(FIGURE_KEY)
                img.verify()  # the CRC of every chunk
        except (OSError, SyntaxError, ValueError):
            raise UserError(
                f"{path}: damaged PNG (a chunk's checksum or the file's structure does not verify)"
            ) from None
        with open(path, "rb") as f:
            f.seek(-len(PNG_END), 2)
            if f.read() != PNG_END:  # verify() stops at the IEND chunk without checking it
                raise UserError(f"{path}: damaged PNG (its end chunk changed)")
    else:  # matplotlib writes the Info dictionary as a PDF literal string with \, \( and \) escapes
        match = re.search(rb"/Keywords \((.*?)(?<!\\)\)", path.read_bytes(), re.S)
        if match:
            text = re.sub(r"\\(.)", r"\1", match[1].decode("latin-1"))
    if not text:
        raise UserError(f"{path}: carries no provenance record (was it written by stages.figures?)")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: its provenance record is not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: its provenance record is not a JSON object")
    return record
