"""The package layout the architecture promises: thin stage commands over a library without import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO

from stages.core import codehash

STAGES = REPO / "stages"
COMMANDS = sorted(p.stem for p in STAGES.glob("*.py") if p.stem != "__init__")
LIBRARY = sorted(
    ".".join(p.relative_to(STAGES).with_suffix("").parts).removesuffix(".__init__") for p in STAGES.glob("*/**/*.py")
)


def test_every_command_is_a_stage_with_a_main():
    assert {
        "data",
        "train",
        "upcycle",
        "evaluate",
        "collect",
        "fit",
        "figures",
        "tables",
        "planner",
        "export",
        "provenance",
    } <= set(COMMANDS)
    for name in COMMANDS:
        tree = ast.parse((STAGES / f"{name}.py").read_text(encoding="utf-8"))
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "main" in functions, name
        assert not any(isinstance(n, ast.ClassDef) for n in tree.body), f"{name}: classes belong in the library"


@pytest.mark.parametrize("name", COMMANDS)
def test_no_command_imports_another(name):
    imported = {m.split(".")[0] for m in codehash.direct_imports(name)}
    assert not imported & (set(COMMANDS) - {name}), f"stages.{name} imports stage commands {imported & set(COMMANDS)}"


def test_library_never_imports_a_command_and_has_no_cycles():
    graph = {m: {d for d in codehash.direct_imports(m) if d != m} for m in LIBRARY}
    for module, deps in graph.items():
        assert not deps & set(COMMANDS), f"library module {module} imports a stage command"
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path, dep])}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_dag_building_and_the_runs_table_never_import_torch():
    code = (
        "import sys, stages.workflow.grid, stages.workflow.config, stages.core.record, stages.collect; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_code_hash_follows_library_imports():
    assert "laws.bootstrap" in codehash.dependencies("fit")
    assert "laws.bootstrap" not in codehash.dependencies("figures")  # figures read fits, they do not refit
    assert "model.moe" in codehash.dependencies("train") and "model.moe" in codehash.dependencies("evaluate")
    assert not any(m.startswith(("model", "training")) for m in codehash.dependencies("fit"))
    assert codehash.code_hash("fit") != codehash.code_hash("figures")


def test_rule_environment_lists_the_runtime_dependencies():
    import tomllib

    import yaml

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    env = yaml.safe_load((REPO / "workflow" / "envs" / "stages.yaml").read_text(encoding="utf-8"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == project
