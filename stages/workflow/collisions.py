"""Config names and token budgets that would land two runs in one place, refused while the DAG is built.

A name of ``models``, ``moe``, ``growth``, ``expansion`` or ``fits`` is a folder or file name, and a token budget
is spelled in each run's path: names that differ only in case are one folder on a case-insensitive file system
(macOS' default), and one budget spelled two ways (200K and 0.2M), or two budgets that train the same whole number
of steps, are two folders, two trainings and two runs-table rows of one run. Torch-free (the Snakefile runs it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stages.core.cli import UserError, parse_tokens
from stages.core.kinds import RunKind


def check_name_case(cfg: dict[str, Any]) -> None:
    """Names that become folders and files differ in more than case: on a case-insensitive file system (macOS'
    default) results/dense/S and results/dense/s are one folder, and two runs would overwrite each other."""
    for sections in (("models", "parents"), ("moe",), ("growth",), ("expansion",), ("fits",)):
        seen: dict[str, str] = {}
        for section in sections:
            for name in cfg.get(section) or {}:
                key = f"{section}.{name}"
                other = seen.setdefault(name.lower(), key)
                if other != key and other.split(".", 1)[1] != name:  # the very same name: refused elsewhere
                    raise UserError(
                        f"config key '{key}': differs from '{other}' only in case; on a case-insensitive file system "
                        "their files would be the same (choose another name)"
                    )


def check_budget_labels(blocks: Iterable[tuple[RunKind, dict[str, Any]]], tokens_per_step: int) -> None:
    """A token count is spelled one way in the whole grid, and two budgets of one trained kind train different
    numbers of steps: a run's path spells its budget, so 200K and 0.2M (or 200K and 200.1K, both 390 steps of
    512 tokens) would be two folders, two trainings and two runs-table rows of the same run."""
    spelled: dict[int, tuple[str, str]] = {}
    steps: dict[tuple[str, int], tuple[int, str, str]] = {}
    for kind, block in blocks:
        for key in kind.budgets:
            where = f"grid.{kind.name}.{key}"
            trained = kind.name if key == kind.budget else kind.continues  # d1: the parent's budget
            for label in map(str, block.get(key, [])):
                n = parse_tokens(label, f"config key '{where}'")
                first, first_where = spelled.setdefault(n, (label, where))
                if first != label:
                    raise UserError(
                        f"config key '{where}': {label!r} is {first!r} ({first_where}) spelled another way; a "
                        "run's path spells its budget, so they would be two folders training one budget (spell it "
                        "one way)"
                    )
                other_n, other, other_where = steps.setdefault((trained, n // tokens_per_step), (n, label, where))
                if other_n != n:
                    raise UserError(
                        f"config key '{where}': {label!r} trains the same {n // tokens_per_step} steps as "
                        f"{other!r} ({other_where}) at {tokens_per_step} tokens per step (train.batch_size x "
                        "train.seq_len): one run under two budgets"
                    )
