"""The config's fits and the planner's choice of them, checked against the laws and the runs table's columns.

A fit job runs after every training job it reads: a misspelt column in ``where``, a ``map`` that leaves a law
column out, a query that does not parse or a planner role given a law of the wrong shape would otherwise end
the study hours later, after the training it was waiting for. Each is refused here while the DAG is built, in
one line naming the key. Queries are checked the way ``stages.fit`` reads them (pandas' expression language,
a subset of Python's): they must parse, and every name in them must be a column that ``stages.fit`` sees (the
runs table's, plus the law columns ``map`` adds). Torch-free (the Snakefile runs it).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from stages.core.cli import UserError
from stages.laws.roles import DENSE, EXPAND, GROW, SCRATCH, UPCYCLE

# the planner key of each role, and the law columns a role's fit must have (the planner predicts with them)
PLANNER_ROLES = {
    UPCYCLE: "upcycled_fit",
    GROW: "grown_fit",
    EXPAND: "expanded_fit",
    SCRATCH: "scratch_fit",
    DENSE: "dense_fit",
}
BACKTICKED = re.compile(r"`([^`]*)`")


def runs_columns() -> list[str]:
    """Every column of results/tables/runs.csv (stages.report.runs_table), the table each fit reads."""
    from stages.report.runs_table import COLUMNS, EXPANSION_COLUMNS, GROWTH_COLUMNS, OPTION_COLUMNS

    return [*COLUMNS, *OPTION_COLUMNS, *GROWTH_COLUMNS, *EXPANSION_COLUMNS]


def query_names(query: str) -> set[str]:
    """The column names a pandas query reads (backticked names included); SyntaxError if it does not parse."""
    names = set(BACKTICKED.findall(query))
    text = BACKTICKED.sub("_bt", query)  # a backticked name (any text) stands for one column
    tree = ast.parse(text.strip(), mode="eval")
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and id(node) not in called and node.id != "_bt":
            names.add(node.id)
    return names


def check_query(query: str, key: str, columns: set[str]) -> None:
    """A fit's ``where`` or ``holdout``: it parses, and reads only columns the fit will have."""
    if not query.strip():
        return
    try:
        names = query_names(query)
    except SyntaxError as err:
        raise UserError(f"config key '{key}': {query!r} is not a pandas query ({err.msg})") from None
    unknown = sorted(names - columns)
    if unknown:
        raise UserError(
            f"config key '{key}': {query!r} reads {unknown[0]!r}, which is not a column of the runs table (nor a "
            "law column mapped by 'map')"
        )


def check_fit(name: str, fit: dict[str, Any], columns: list[str]) -> None:
    """One entry of ``fits``: a known law, a ``map`` from its columns to the runs table's, queries on them."""
    from stages.laws.forms import LAWS, LOSS

    key = f"fits.{name}"
    if fit["law"] not in LAWS:
        raise UserError(f"config key '{key}.law': unknown law {fit['law']!r} (known: {', '.join(LAWS)})")
    law = LAWS[fit["law"]]
    needed = (*law.columns, LOSS)
    for law_col, table_col in fit["map"].items():
        if law_col not in needed:
            raise UserError(
                f"config key '{key}.map': {law_col!r} is not a column of law {law.name} (its columns: "
                f"{', '.join(needed)})"
            )
        if table_col not in columns:
            raise UserError(f"config key '{key}.map.{law_col}': {table_col!r} is not a column of the runs table")
    for col in needed:
        if col not in fit["map"] and col not in columns:
            raise UserError(
                f"config key '{key}.map': law {law.name} needs column {col!r}, which the runs table does not have; "
                f"map it (e.g. {col}: {'val_loss' if col == LOSS else 'N_active'})"
            )
    visible = {*columns, *fit["map"]}
    check_query(fit["where"], f"{key}.where", visible)
    check_query(fit["holdout"], f"{key}.holdout", visible)
    if fit["bootstrap"] == 1:
        raise UserError(
            f"config key '{key}.bootstrap': one resample gives no interval (the fit would stop); use 0 (none) or >= 2"
        )


def check_fits(cfg: dict[str, Any]) -> None:
    """Every enabled fit, and the fit each planner role reads: enabled and of a law that role can use."""
    from stages.laws.fitted import UPCYCLED_LAWS

    columns = runs_columns()
    fits = {name: fit for name, fit in cfg["fits"].items() if fit}
    for name, fit in fits.items():
        check_fit(name, fit, columns)
    planner = cfg.get("planner")
    if not planner:
        return
    for role, key in PLANNER_ROLES.items():
        name = planner[key]
        if name is None or (name not in fits and role in (SCRATCH, DENSE)):
            continue  # scratch and dense: without their fit the planner leaves those options out
        if name not in fits:
            raise UserError(f"config key 'planner.{key}': {name!r} is not an enabled fit")
        law = fits[name]["law"]
        if role in (UPCYCLE, GROW, EXPAND) and law not in UPCYCLED_LAWS:
            raise UserError(
                f"config key 'planner.{key}': fit {name!r} is of law {law!r}, not an upcycled (D1, D2) law "
                f"({', '.join(UPCYCLED_LAWS)})"
            )
        if role in (SCRATCH, DENSE) and law != "chinchilla":
            raise UserError(
                f"config key 'planner.{key}': fit {name!r} is of law {law!r}; the planner predicts the {role} "
                "option from a law in N and D (chinchilla)"
            )
