"""Content hashes of stage code, so Snakemake reruns a stage when (and only when) its code changes.

Snakemake does not see the code behind ``python -m stages.X``; the rules pass ``code_hash("train")``
as a param instead. The hash covers the stage module and every ``stages`` module it imports,
transitively and through subpackages (found with ``ast``, without importing anything), plus the
``__init__.py`` of every package on the way, so an edit to ``model/moe.py`` reruns training, surgery
and evaluation but not the fits. A ``touch`` changes nothing. Stdlib only: the Snakefile imports this
module while building the DAG.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PACKAGE = PACKAGE_DIR.name


def module_file(module: str) -> Path | None:
    """The source file of ``module`` (dotted, relative to the package), or None if it is not ours."""
    base = PACKAGE_DIR.joinpath(*module.split(".")) if module else PACKAGE_DIR
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> set[str]:
    """``laws.fitter`` -> {laws.fitter, laws}: importing a submodule runs its package's ``__init__``."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@functools.cache
def direct_imports(module: str) -> frozenset[str]:
    """The package modules that ``module`` names in its import statements (dotted, relative to the package)."""
    path = module_file(module)
    assert path is not None, module
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != PACKAGE:
                continue
            base = ".".join(parts[1:])
            if base:
                found.add(base)
            for alias in node.names:  # ``from stages.laws import forms`` names a submodule
                child = f"{base}.{alias.name}" if base else alias.name
                if module_file(child) is not None:
                    found.add(child)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(".".join(parts[1:]))
    return frozenset(m for m in found if module_file(m) is not None)


def _imports(module: str) -> frozenset[str]:
    """What importing ``module`` loads: its direct imports and the packages they sit in."""
    return frozenset(p for m in direct_imports(module) for p in _with_parents(m) if module_file(p) is not None)


def dependencies(module: str) -> list[str]:
    """The module, its packages and everything it imports from the package, transitively, sorted."""
    seen: set[str] = set()
    todo = sorted(_with_parents(module))
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
        path = module_file(name)
        assert path is not None
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
