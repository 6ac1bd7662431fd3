"""The package layout the architecture promises: thin stage commands over a library without import cycles."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from conftest import REPO

from stages.core import codehash
from stages.core.kinds import KINDS
from stages.workflow.sections import TRAINING_RULES

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
        "expand",
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
        "sys.exit('torch' in sys.modules or 'matplotlib' in sys.modules)"
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


# ----- one table of run kinds (stages/core/kinds.py) -----

# Where a run kind's name may still be spelled as a string outside the kinds table, and why: there it names
# something else (or a change in flight will remove it). Everything else reads the table or its constants.
KIND_NAMES_ELSEWHERE = {
    ("workflow.grid", "dense"): "the flag --dense-fit of stages.findings: a fit role",
    ("workflow.grid", "upcycled"): "the flag --upcycled-fit of stages.findings: a fit role",
    ("report.figure_specs", "lr_sweep"): "the name of the lr_sweep figure",
    ("report.plots.lr_sweep", "lr_sweep"): "the name of the lr_sweep figure",
    ("interop.nanotron_check", "dense"): "a dense model's shape in a message",
}
# the laws name laws and planner roles (the law "upcycled", the role "dense"), never run kinds
OTHER_NAMESPACES = ("laws.",)


def _strings(module: str) -> list[tuple[str, str]]:
    """(text, how) for every string constant (how: literal, or doc for a docstring) and keyword name of ``module``."""
    tree = ast.parse(codehash.module_file(module).read_text(encoding="utf-8"))
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.value, "doc" if id(node) in docs else "literal"))
        elif isinstance(node, ast.keyword) and node.arg:
            out.append((node.arg, "keyword"))
    return out


def test_run_kinds_are_spelled_only_in_the_kinds_table():
    folders = "|".join(re.escape(k.folder) for k in KINDS.values())
    path = re.compile(rf"(^|/)({folders})/")  # a run path spelled by hand ("moe/", f"{root}/dense/...")
    found, paths = set(), []
    for module in [*LIBRARY, *COMMANDS]:
        if module == "core.kinds" or module.startswith(OTHER_NAMESPACES):
            continue
        for text, how in _strings(module):
            if text in KINDS:
                found.add((module, text))
            if how == "literal" and path.search(text):
                paths.append((module, text))
    new = sorted(found - set(KIND_NAMES_ELSEWHERE))
    assert not new, f"run kinds spelled outside stages/core/kinds.py (read KINDS or its constants): {new}"
    stale = sorted(set(KIND_NAMES_ELSEWHERE) - found)
    assert not stale, f"KIND_NAMES_ELSEWHERE lists spellings that are gone: {stale}"
    assert not paths, f"run paths spelled outside the kinds table (use Run.run_id, Grid.init_dir): {paths}"


def test_the_kinds_table_is_complete_and_consistent():
    from stages.core.kinds import BUDGETS, RECORD_KINDS, SURGERY_PATHS

    assert {"dense", "upcycled", "scratch_moe", "dense_cont", "grown", "lr_sweep", "expanded"} <= set(KINDS)
    assert set(KINDS) <= set(RECORD_KINDS) and set(SURGERY_PATHS) <= set(RECORD_KINDS)
    assert len({k.folder for k in KINDS.values()}) == len(KINDS)  # one folder, and one training rule, per kind
    for kind in KINDS.values():
        fields = re.findall(r"{(\w+)}", kind.path)
        assert fields[0] == "model" and set(fields[1:]) == set(kind.axes), kind.name  # the path names every axis
        assert kind.budget in kind.budgets and set(kind.budgets) <= set(BUDGETS), kind.name
        assert not kind.variant or kind.variant in kind.axes, kind.name
        assert bool(kind.continues) == ("d1" in kind.axes and "d2" in kind.axes), kind.name
        assert not kind.continues or kind.continues in KINDS, kind.name
        assert not kind.surgery or kind.surgery in SURGERY_PATHS, kind.name
        assert kind.table_budget in ("D1", "D2", ""), kind.name
        assert kind.lr_policy.split(".")[0] in ("train", kind.variant), kind.name


def _rules() -> dict[str, str]:
    """The text of every rule of workflow/rules/*.smk, by name."""
    rules = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^rule (\w+):\n", smk.read_text(encoding="utf-8"), flags=re.M)
        rules.update(zip(parts[1::2], parts[2::2], strict=True))
    return rules


def _section(rule: str, name: str) -> str:
    """The body of one section (input, params, ...) of a rule's text."""
    match = re.search(rf"^    {name}:\n((?:        .*\n|\n)*)", rule, flags=re.M)
    return match.group(1) if match else ""


def test_training_rules_are_one_per_kind_and_use_the_shared_job_builder():
    rules = _rules()
    assert set(TRAINING_RULES) == {k.folder for k in KINDS.values()} | {"stable"}
    for kind in KINDS.values():
        rule = rules[kind.folder]  # the rule that trains a kind is named by its folder
        params = re.findall(r"^        (\w+)=", _section(rule, "params"), flags=re.M)
        assert params == ["args", "code"], f"rule {kind.folder}: params {params} (one `args` from train_args)"
        assert f'args=lambda w: train_args("{kind.name}", w)' in rule, kind.folder
        assert f'unpack(lambda w: train_inputs("{kind.name}", w))' in _section(rule, "input"), kind.folder
        for files in ("run_output", "run_log", "run_benchmark"):
            assert f'{files}("{kind.name}")' in rule, (kind.folder, files)
        assert "python -m stages.train {params.args}" in rule, kind.folder
        assert len(rule.strip().splitlines()) <= 25, f"rule {kind.folder}: keep training rules short"
    common = (REPO / "workflow" / "rules" / "common.smk").read_text(encoding="utf-8")
    assert "run=folder_pattern()" in common and "family=folder_pattern(" in common  # wildcards from the table


# ----- module names and sizes -----

# library modules that share their name with a stage command, and why they still do
COMMAND_NAMES_IN_LIBRARY = {"laws.planner": "owned by the laws change in flight, which splits it"}
# modules over LONG lines, and why
LONG = 500
LONG_MODULES = {
    "report.claims": "one row function per published claim, each its own comparison; they share the verdict rules "
    "and the seed-noise band, and read top to bottom as the findings table does",
}


def test_no_library_module_is_named_like_a_stage_command():
    clashes = {m for m in LIBRARY if m.rsplit(".", 1)[-1] in COMMANDS}
    assert clashes <= set(COMMAND_NAMES_IN_LIBRARY), f"rename: {sorted(clashes - set(COMMAND_NAMES_IN_LIBRARY))}"
    assert set(COMMAND_NAMES_IN_LIBRARY) <= clashes, "COMMAND_NAMES_IN_LIBRARY lists a module renamed since"


def test_no_module_is_longer_than_its_reason_allows():
    lengths = {m: len(codehash.module_file(m).read_text(encoding="utf-8").splitlines()) for m in [*LIBRARY, *COMMANDS]}
    long = {m for m, n in lengths.items() if n > LONG}
    assert long <= set(LONG_MODULES), (
        f"split these modules (or list them with a reason): {sorted(long - set(LONG_MODULES))}"
    )
    assert set(LONG_MODULES) <= long, "LONG_MODULES lists a module that is short now"
