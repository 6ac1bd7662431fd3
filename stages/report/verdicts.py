"""One findings table across every study under a results folder, for one place to read all verdicts.

Each study writes its own ``tables/findings.csv`` (the default study at ``results/tables/``, a named study at
``results/<study>/tables/``); :func:`collect` stacks them with a ``study`` column ("default" for the unnamed one),
studies in name order and each study's rows in its own order, and adds where each study ran as far as its run
records (``provenance.json``) say: ``machine`` (CPU, kernel path and GPU, torch version, threads per job) and
``commit`` (the git commit of the code that trained it; for records older than that field, the code hash of the
training stage stands in, so two studies trained by different code still tell apart). A table written before the
paired comparisons (no ``effect`` or ``seeds`` column) reads with those empty. ``make docs`` shows the result
generated, with the commit and machine it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stages.core.cli import UserError
from stages.core.machine import Machine

DEFAULT_STUDY = "default"
COLUMNS = ["study", "finding", "claim", "measured", "effect", "interval", "seeds", "verdict", "commit", "machine"]
COLUMNS += ["evidence"]
REQUIRED = ["finding", "claim", "measured", "interval", "verdict", "evidence"]  # every findings table has these
ADDED = ["effect", "seeds"]  # written since the paired comparisons; empty for an older table
NOT_RECORDED = "not recorded"


def study_tables(results: Path) -> dict[str, Path]:
    """Study name -> its findings table, for every study under ``results`` that has one."""
    tables = {}
    if (results / "tables" / "findings.csv").is_file():
        tables[DEFAULT_STUDY] = results / "tables" / "findings.csv"
    for path in sorted(results.glob("*/tables/findings.csv")):
        tables[path.parent.parent.name] = path
    return tables


def _records(root: Path, skip: set[str]) -> list[dict]:
    """The run records of a study: those of the runs in its ``tables/runs.csv`` where it has one (runs left over
    from an earlier grid do not count), else every one under its root but its named sub-studies (``skip``);
    unreadable ones skipped."""
    table = root / "tables" / "runs.csv"
    if table.is_file():
        try:
            ids = pd.read_csv(table, usecols=["run_id"], dtype=str)["run_id"]
        except (OSError, ValueError):
            ids = pd.Series([], dtype=str)
        paths = [root / run_id / "provenance.json" for run_id in sorted(ids)]
    else:
        paths = [p for p in sorted(root.rglob("provenance.json")) if p.relative_to(root).parts[0] not in skip]
    out = []
    for path in paths:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def _listed(values: list[str]) -> str:
    """Up to three values joined, the rest counted."""
    return ", ".join(values[:3]) + (f" and {len(values) - 3} more" if len(values) > 3 else "")


def provenance(root: Path, skip: set[str] = frozenset()) -> tuple[str, str]:
    """(commit, machine) of the study under ``root`` from its run records: what they hold, sorted and joined.

    Records written before machines were recorded (no ``machine`` key) fall back on the training code hash."""
    records = _records(root, set(skip))
    if not records:
        return NOT_RECORDED, NOT_RECORDED
    machines = [r["machine"] for r in records if isinstance(r.get("machine"), dict)]
    commits = sorted({str(m.get("commit") or "") for m in machines} - {""})
    codes = sorted({str(r.get("code_hash", "")) for r in records if r.get("code_hash") and r.get("steps")})
    hosts = sorted({Machine(**m).describe() for m in machines})
    torch = sorted({str(r["torch_version"]) for r in records if r.get("torch_version")})
    threads = sorted({int(r["threads"]) for r in records if r.get("threads")})
    unrecorded = len(records) - len(machines)
    commit = _listed(commits) or NOT_RECORDED
    if not commits or unrecorded:
        commit += f"; train code {_listed(codes) or NOT_RECORDED}"
    machine = f"{'; '.join(hosts) or f'host and CPU {NOT_RECORDED}'}; torch {', '.join(torch) or NOT_RECORDED}; "
    machine += f"{', '.join(str(t) for t in threads) or '?'} thread(s) per job"
    if machines and unrecorded:
        machine += f"; {unrecorded} of {len(records)} records name no machine"
    return commit, machine


def collect(results: Path) -> pd.DataFrame:
    """Every study's findings in one table (columns :data:`COLUMNS`); an error names a table that is not one."""
    frames = []
    tables = study_tables(results)
    named = {study for study in tables if study != DEFAULT_STUDY}
    for study, path in sorted(tables.items()):
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: cannot read as CSV ({err})") from None
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            raise UserError(f"{path}: missing columns {missing} (a findings table written by stages.findings)")
        for column in ADDED:
            if column not in frame.columns:
                frame[column] = ""
        commit, machine = provenance(path.parent.parent, named if study == DEFAULT_STUDY else set())
        frames.append(frame.assign(study=study, commit=commit, machine=machine)[COLUMNS])
    if not frames:
        raise UserError(f"{results}: no study has a tables/findings.csv (run a study first)")
    return pd.concat(frames, ignore_index=True)
