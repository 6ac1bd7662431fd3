"""One findings table across every study under a results folder, for one place to read all verdicts.

Each study writes its own ``tables/findings.csv`` (the default study at ``results/tables/``, a named study at
``results/<study>/tables/``); :func:`collect` stacks them with a ``study`` column ("default" for the unnamed one),
studies in name order and each study's rows in its own order. ``make docs`` shows the result generated, with the
commit and machine it came from.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.core.cli import UserError

DEFAULT_STUDY = "default"
COLUMNS = ["study", "finding", "claim", "measured", "interval", "verdict", "evidence"]


def study_tables(results: Path) -> dict[str, Path]:
    """Study name -> its findings table, for every study under ``results`` that has one."""
    tables = {}
    if (results / "tables" / "findings.csv").is_file():
        tables[DEFAULT_STUDY] = results / "tables" / "findings.csv"
    for path in sorted(results.glob("*/tables/findings.csv")):
        tables[path.parent.parent.name] = path
    return tables


def collect(results: Path) -> pd.DataFrame:
    """Every study's findings in one table (columns :data:`COLUMNS`); an error names a table that is not one."""
    frames = []
    for study, path in sorted(study_tables(results).items()):
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: cannot read as CSV ({err})") from None
        missing = [c for c in COLUMNS[1:] if c not in frame.columns]
        if missing:
            raise UserError(f"{path}: missing columns {missing} (a findings table written by stages.findings)")
        frames.append(frame[COLUMNS[1:]].assign(study=study)[COLUMNS])
    if not frames:
        raise UserError(f"{results}: no study has a tables/findings.csv (run a study first)")
    return pd.concat(frames, ignore_index=True)
