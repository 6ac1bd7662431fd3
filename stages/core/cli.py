"""Shared command-line plumbing: user errors become one line and exit status 2.

Every stage raises :class:`UserError` for problems the user can fix (bad config value, missing or
corrupt input, non-finite loss). ``run`` turns those into one line on stderr naming the file or key,
with no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


class UserError(Exception):
    """A problem with the user's inputs; printed as one line, exit status 2."""


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Call ``main`` and map :class:`UserError` to a one-line message and exit status 2."""
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as a :class:`UserError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def parse_tokens(text: str | int, key: str = "tokens", what: str = "token count") -> int:
    """Parse a token count like ``250K``, ``1.5M``, ``2B``, ``4096`` or ``5e10`` (SI multipliers, base 1000;
    scientific notation for a whole number). ``what`` names the count in errors (e.g. "parameter count")."""
    if isinstance(text, bool):
        raise UserError(f"{key}: expected a {what}, got {text!r}")
    if isinstance(text, int):
        value = text
    else:
        s = str(text).strip()
        mult = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
        try:
            scale = mult.get(s[-1:].upper(), 1)
            number = s[:-1] if scale > 1 else s
            if scale == 1 and number.lstrip("+-").isdigit():
                value = int(number)
            else:
                exact = float(number) * scale
                value = int(round(exact))  # OverflowError for inf, ValueError for nan
                if abs(exact - value) > 1e-6:  # a whole number (every float above 2**53 is one)
                    raise ValueError
        except (ValueError, OverflowError):
            raise UserError(f"{key}: cannot read {text!r} as a {what} (e.g. 250K, 1.5M, 2B, 4096, 5e10)") from None
    if value <= 0:
        raise UserError(f"{key}: {what} must be positive, got {text!r}")
    return value


def parse_json_object(text: str, key: str) -> dict[str, Any]:
    """A JSON object given on the command line (e.g. ``--labels``), or a one-line user error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{key}: not valid JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise UserError(f"{key}: expected a JSON object")
    return value
