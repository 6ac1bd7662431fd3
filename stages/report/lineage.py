"""Trace an output back to the corpus packages and the code that made it, verifying every link on the way.

A figure records the sha256 of the table and fits it drew, a fit its table's sha256, a table row its
checkpoint's sha256, a checkpoint its parent's weights and its corpus files, a corpus manifest its packages.
:class:`Tracer` walks these links into an indented tree, marking a link whose file changed since as MISMATCH
(or MISSING) and counting them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json, sha256_file
from stages.core.cli import UserError
from stages.core.record import read_record

FIGURE_KEY = "provenance"  # PNG text chunk / PDF Keywords entry written by report.plots.common.save


class Tracer:
    """Walks the links of one output, printing an indented tree and counting mismatches."""

    def __init__(self, results_root: Path) -> None:
        self.root = results_root
        self.lines: list[str] = []
        self.mismatches = 0
        self._seen: set[str] = set()

    def say(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text)

    def verify(self, path: Path, expected: str | None) -> str:
        if not path.exists():
            self.mismatches += 1
            return "MISSING"
        if expected is None:
            return f"sha256 {sha256_file(path)[:12]}"
        actual = sha256_file(path)
        if actual != expected:
            self.mismatches += 1
            return f"MISMATCH (recorded {expected[:12]}, now {actual[:12]})"
        return f"sha256 {actual[:12]} ok"

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
        record = figure_record(path)
        self.say(depth, f"{path}  figure {record.get('figure', '?')}")
        self.say(depth + 1, f"runs {record['runs']}: {self.verify(Path(record['runs']), record['runs_sha256'])}")
        for fit_path, sha in sorted(record.get("fits", {}).items()):
            self.say(depth + 1, f"fit {fit_path}: {self.verify(Path(fit_path), sha)}")
            self.fit(Path(fit_path), depth + 2, header=False)
        self.table(Path(record["runs"]), depth + 1)

    def fit(self, path: Path, depth: int, header: bool = True) -> None:
        fit = read_json(path)
        if header:
            self.say(depth, f"{path}  fit of law {fit.get('law')}")
        self.say(depth + 1, f"params {json.dumps(fit.get('params'), sort_keys=True)}")
        table = fit.get("table")
        if table:
            self.say(depth + 1, f"table {table}: {self.verify(Path(table), fit.get('table_sha256'))}")
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
        self.say(depth, f"{path}  {len(rows)} runs")
        for row in rows:
            run_dir = self.root / row["run_id"]
            status = self.verify(run_dir / "model.safetensors", row.get("checkpoint_sha256"))
            self.say(depth + 1, f"{row['run_id']}  val_loss {float(row['val_loss']):.4f}  weights {status}")
            self.checkpoint(run_dir, depth + 2, header=False)

    def evaluation(self, path: Path, depth: int) -> None:
        ev = read_json(path)
        self.say(depth, f"{path}  val_loss {ev['val_loss']:.5f} on {ev['tokens']} tokens of {ev['tokens_file']}")
        ckpt = Path(ev["checkpoint"])
        self.say(depth + 1, f"checkpoint {ckpt}: {self.verify(ckpt / 'model.safetensors', ev['checkpoint_sha256'])}")
        self.checkpoint(ckpt, depth + 2, header=False)

    def checkpoint(self, directory: Path, depth: int, header: bool = True) -> None:
        record = read_record(directory)
        if header:
            status = self.verify(directory / "model.safetensors", record.weights_sha256 or None)
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
                self.say(depth + 1, f"imported {path}: {self.verify(path, sha)}")
        if record.parent:
            path = Path(record.parent.path)
            status = self.verify(path / "model.safetensors", record.parent.weights_sha256)
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
        self.say(depth, f"corpus {manifest_path}  vocab {manifest.get('vocab_size')}  code {manifest.get('code_hash')}")
        directory = manifest_path.parent
        for split, entry in sorted(manifest.get("files", {}).items()):
            recorded = entry.get("sha256")
            if expected and split == "train" and expected.get("train_sha256") not in (None, recorded):
                self.mismatches += 1
                self.say(depth + 1, f"{split}: MISMATCH with the checkpoint's record")
            self.say(depth + 1, f"{split} {entry.get('name')}: {self.verify(directory / entry['name'], recorded)}")
        for source in manifest.get("sources", []):
            if source.get("kind") == "files":
                for f in source.get("files", []):
                    self.say(depth + 1, f"file {f['path']}: {self.verify(Path(f['path']), f['sha256'])}")
            else:
                self.say(
                    depth + 1,
                    f"package {source['package']}={source['version']} ({source['kind']})  "
                    f"sha256 {source['sha256'][:12]}  {source.get('license', '')}",
                )


def figure_record(path: Path) -> dict[str, Any]:
    """The provenance record a figure carries (PNG text chunk or PDF Keywords)."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    text = None
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as img:
            text = img.info.get(FIGURE_KEY)
    else:  # matplotlib writes the Info dictionary as a PDF literal string with \, \( and \) escapes
        match = re.search(rb"/Keywords \((.*?)(?<!\\)\)", path.read_bytes(), re.S)
        if match:
            text = re.sub(r"\\(.)", r"\1", match[1].decode("latin-1"))
    if not text:
        raise UserError(f"{path}: carries no provenance record (was it written by stages.figures?)")
    return json.loads(text)
