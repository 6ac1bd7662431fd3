"""Content hashes of stage code, so Snakemake reruns a stage when (and only when) its code changes.

Snakemake does not see the code behind ``python -m stages.X``; the rules pass ``code_hash("train")``
as a param instead. The hash covers the stage module and every ``stages`` module it imports,
transitively (found with ``ast``, without importing anything), so an edit to ``model.py`` reruns
training, upcycling and evaluation but not the fits. A ``touch`` changes nothing. Stdlib only: the
Snakefile imports this module while building the DAG.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name


@functools.cache
def _imports(module: str) -> frozenset[str]:
    """Names of the sibling modules that ``module`` imports."""
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == PACKAGE and len(parts) > 1:
                found.add(parts[1])
            elif parts == [PACKAGE]:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
    return frozenset(m for m in found if (PACKAGE_DIR / f"{m}.py").exists())


def dependencies(module: str) -> list[str]:
    """The module and everything it imports from the package, transitively, sorted."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_imports(name))
    return sorted(seen)


def code_hash(module: str) -> str:
    """sha256 (16 hex digits) over the sources of ``module`` and its package dependencies."""
    h = hashlib.sha256()
    for name in dependencies(module):
        h.update(name.encode() + b"\0" + (PACKAGE_DIR / f"{name}.py").read_bytes() + b"\0")
    return h.hexdigest()[:16]
