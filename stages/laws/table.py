"""Tables in, law rows out: read a CSV/TSV/Parquet table, map its columns to a law's, filter and check them.

Every failure is a one-line UserError naming the file (or the flag) and what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.cli import UserError
from stages.laws.forms import LOSS, Law


def read_table(path: str) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet table; any failure is a one-line user error naming the file.

    A .csv whose header line has tabs and no commas is read as tab-separated (spreadsheets export TSV as .csv).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".tsv", ".parquet", ".pq"):
        raise UserError(f"{path}: unsupported table format {suffix or '(none)'!r}; use .csv, .tsv or .parquet")
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" or _tab_separated(path) else ",")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except Exception as err:  # pandas/pyarrow raise many types for corrupt files
        message = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"{path}: cannot read table ({message})") from None


def _tab_separated(path: str) -> bool:
    """Whether the first non-blank line of a text table separates its fields by tabs rather than commas."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if line.strip():
                return "\t" in line and "," not in line
    return False


def parse_map(spec: str | None, law: Law) -> dict[str, str]:
    """``N=N_active,loss=val_loss`` -> {law column: table column}."""
    mapping: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise UserError(f"--map: expected LAW_COLUMN=TABLE_COLUMN, got {item!r}")
        if key not in (*law.columns, LOSS):
            raise UserError(f"--map: {key!r} is not a column of law {law.name} ({', '.join((*law.columns, LOSS))})")
        mapping[key] = value
    return mapping


def select(frame: pd.DataFrame, query: str, flag: str, source: str) -> np.ndarray:
    """Boolean row mask of a pandas query, or a one-line user error."""
    try:
        mask = frame.eval(query)
    except Exception as err:  # pandas raises many types for bad expressions
        raise UserError(f"{flag} {query!r} on {source}: {' '.join(str(err).split()) or type(err).__name__}") from None
    if not isinstance(mask, pd.Series) or mask.dtype != bool:
        raise UserError(f"{flag} {query!r} on {source}: not a true/false condition on rows")
    return mask.to_numpy()


def prepare(table: pd.DataFrame, law: Law, mapping: Mapping[str, str], where: str | None, source: str) -> pd.DataFrame:
    """The table plus the law's columns (mapped from table columns), filtered by ``where`` and checked."""
    frame = table.copy()
    for law_col, table_col in mapping.items():
        if table_col not in table.columns:
            raise UserError(f"{source}: missing column {table_col!r} (mapped to {law_col} by --map)")
        frame[law_col] = table[table_col]
    if where:
        frame = frame[select(frame, where, "--where", source)]
        if frame.empty:
            raise UserError(f"--where {where!r} on {source}: no rows left")
    check_frame(frame, law, source)
    for col in (*law.columns, LOSS):
        frame[col] = pd.to_numeric(frame[col]).astype(float)
    return frame.reset_index(drop=True)


def check_frame(frame: pd.DataFrame, law: Law, source: str = "table") -> None:
    """Raise a UserError naming the column and ``source`` unless every law column is finite and positive."""
    for col in (*law.columns, LOSS):
        if col not in frame.columns:
            raise UserError(
                f"{source}: missing column {col!r} needed by law {law.name} (needs {', '.join((*law.columns, LOSS))})"
            )
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(float)
        for bad, what in ((~np.isfinite(values), "non-finite or non-numeric"), (values <= 0, "non-positive")):
            if bad.any():
                first = frame.index[np.flatnonzero(bad)[0]]
                raise UserError(
                    f"{source}: column {col!r} has {int(bad.sum())} {what} value(s) "
                    f"(first at data row {first}: {frame[col].loc[first]!r}); values must be > 0"
                )
