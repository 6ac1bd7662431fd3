"""Bad inputs end in one line naming the key or the file, exit status 2, before anything runs.

Config cases come from stages/workflow/bad_values.py (one or more per option; a meta-test fails for an option
without one) and are checked in-process the way the Snakefile builds its DAG (validate_config, then the Grid and
the planner's and findings' arguments), a handful of them through a real ``snakemake -n``. Stage-command cases run
``python -m stages.X`` with bad arguments or files, all at once in two processes (each pays an interpreter start).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, run_snakemake, write_corpus

from stages.core.cli import UserError
from stages.workflow.bad_values import CASES, BadConfig, bad_config, base_config, snakemake_cases
from stages.workflow.config import validate_config
from stages.workflow.grid import Grid
from stages.workflow.schema import config_schema


def _build_dag_inputs(cfg: dict) -> None:
    """What the Snakefile computes from a config before the first job: the validated config, the grid, and the
    planner's and findings' arguments (params of rules)."""
    cfg = validate_config(cfg)
    grid = Grid(cfg)
    if cfg["planner"]:
        grid.planner_args()
    grid.findings_args()


# ----- every option has bad values -----


def _schema_keys() -> tuple[set[str], set[str]]:
    """Every option of the config schema as a dotted key (``*`` for a user-chosen name): the leaves, and every
    key (sections and blocks too)."""
    schema = config_schema()
    defs = schema["$defs"]

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        return node

    def objects(node: dict) -> list[dict]:
        node = resolve(node)
        found = [node] if "properties" in node or isinstance(node.get("additionalProperties"), dict) else []
        for choice in node.get("oneOf", []) + node.get("anyOf", []):
            choice = resolve(choice)
            found += objects(resolve(choice["items"]) if choice.get("type") == "array" else choice)
        return found

    leaves: set[str] = set()
    every: set[str] = set()

    def walk(node: dict, path: str) -> None:
        every.add(path)
        children = objects(node)
        if not children:
            leaves.add(path)
        for obj in children:
            for name, sub in obj.get("properties", {}).items():
                walk(sub, f"{path}.{name}" if path else name)
            if isinstance(obj.get("additionalProperties"), dict):
                walk(obj["additionalProperties"], f"{path}.*")

    for name, sub in schema["properties"].items():
        walk(sub, name)
    return leaves, every


def test_every_option_of_every_section_has_a_bad_value():
    """A new option needs its bad values in stages/workflow/bad_values.py (and each case names a real option)."""
    leaves, every = _schema_keys()
    covered = {case.key for case in CASES}
    missing = sorted(leaves - covered)
    assert not missing, f"options without a bad-value case in stages/workflow/bad_values.py: {missing}"
    assert not covered - every, f"cases naming no option of the schema: {sorted(covered - every)}"


@pytest.mark.parametrize("base", sorted({case.base for case in CASES}))
def test_each_base_of_the_cases_is_a_valid_config(base):
    """So that each case fails because of its own change."""
    _build_dag_inputs(base_config(base))


# ----- bad configs: one line naming the key, before any job -----


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_config_is_one_line_naming_the_key(case: BadConfig):
    with pytest.raises(UserError) as info:
        _build_dag_inputs(bad_config(case))
    message = str(info.value)
    assert case.names in message and "\n" not in message, message


@pytest.mark.parametrize("case", snakemake_cases(), ids=[case.id for case in snakemake_cases()])
def test_snakemake_refuses_a_bad_config_in_one_line_with_status_2(case: BadConfig, tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(json.dumps(bad_config(case)))
    res = run_snakemake(REPO, tmp_path, "-n", "--configfile", str(overlay), check=False)
    output = res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert res.returncode == 2 and "Traceback" not in output, output[-3000:]
    assert len(errors) == 1 and case.names in errors[0], res.stderr[-3000:]


# ----- bad stage commands: python -m stages.X, one line on stderr, status 2 -----

MODEL = json.dumps({"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64})
MOE = '{"experts": 4, "top_k": 2}'


def _train(*extra: str, model: str = MODEL, data: str = "{F}/corpus", tokens: str = "4K") -> list[str]:
    return [
        *("--kind", "dense", "--run-id", "t/x", "--data", data, "--tokens", tokens, "--seed", "1"),
        *("--data-seed", "2", "--model", model, "--out", "{O}/run", *extra),
    ]


PLAN = ["--n1", "1e6", "--n-active", "2e6", "--d1", "1M", "--extra-tokens", "1M"]
FIT = ["--table", "{F}/table.csv", "--out", "{O}/f.json"]
# (stage, arguments, what the error line must name); {F}: the fixture folder, {O}: an output folder
STAGE_CASES = [
    ("fit", ["--table", "{F}/missing.csv", "--law", "chinchilla", "--out", "{O}/f.json"], "{F}/missing.csv"),
    ("fit", ["--table", "{F}/notes.txt", "--law", "chinchilla", "--out", "{O}/f.json"], "{F}/notes.txt"),
    ("fit", ["--table", "{F}/garbage.parquet", "--law", "chinchilla", "--out", "{O}/f.json"], "{F}/garbage.parquet"),
    ("fit", [*FIT, "--law", "kaplan"], "--law"),
    ("fit", [*FIT, "--law", "chinchilla", "--map", "N=params"], "'params'"),
    ("fit", [*FIT, "--law", "chinchilla", "--where", "N =="], "--where"),
    ("fit", [*FIT, "--law", "chinchilla", "--holdout", "N > 0"], "--holdout"),
    ("fit", [*FIT, "--spec", "{oops"], "--spec"),
    ("fit", [*FIT, "--spec", '{"law": "chinchilla", "bootstrap": -1}'], "bootstrap"),
    ("fit", ["--table", "{F}/nonpos.csv", "--law", "chinchilla", "--out", "{O}/f.json"], "{F}/nonpos.csv"),
    ("fit", [*FIT, "--law", "upcycled"], "'D1'"),
    ("planner", ["--fits", "{F}/nope", *PLAN], "--fits"),
    ("planner", ["--fits", "{F}/fits_bad", *PLAN], "{F}/fits_bad/upcycled.json"),
    ("planner", ["--fits", "{F}/fits_chin", *PLAN], "{F}/fits_chin/upcycled.json"),
    ("planner", ["--fits", "{F}/fits_chin", *PLAN, "--max-extrapolation", "0"], "--max-extrapolation"),
    ("planner", ["--fits", "{F}/fits_chin", *PLAN, "--grown-fit", "g"], "--n-grown"),
    ("findings", ["--runs", "{F}/table.csv", "--fits", "{F}/fits_chin", "--out", "{O}/fnd"], "{F}/table.csv"),
    ("figures", ["loss_vs_d2", "--runs", "{F}/table.csv", "--fit", "{F}/notfit.json", "--out", "{O}/g"], "notfit"),
    ("tables", ["--fits", "{F}/fits_bad/upcycled.json", "--out", "{O}/tab"], "{F}/fits_bad/upcycled.json"),
    ("collect", ["--evals", "{F}/missing.json", "--out", "{O}/runs.csv"], "{F}/missing.json"),
    ("collect", ["--evals", "{F}/no_checkpoint.json", "--out", "{O}/runs.csv"], "{F}/no_checkpoint.json"),
    ("fit", [*FIT, "--law", "chinchilla", "--grid", "fast"], "'default' or a whole number"),
    ("provenance", ["{F}/nope"], "{F}/nope"),
    ("ledger", ["--configfile", "{F}/bad.yaml"], "{F}/bad.yaml"),
    ("ledger", ["--configfile", "{F}/badvalue.yaml"], "config key 'train.lr'"),
    ("all_findings", ["--results", "{F}/nope", "--out", "{O}/af.csv"], "{F}/nope"),
    ("train", _train("--train", '{"lr": -1}'), "train.lr"),
    ("train", _train(model="{oops"), "--model"),
    ("train", _train(data="{F}/corpus_bad"), "{F}/corpus_bad/manifest.json"),
    ("train", _train("--train", '{"device": "tpu"}'), "--device"),
    ("evaluate", ["--checkpoint", "{F}/ckpt_bad", "--tokens", "{F}/corpus/val.bin", "--out", "{O}/e.json"], "config"),
    ("upcycle", ["--dense", "{F}/x", "--out", "{O}/u", "--data", "{F}/corpus", "--moe", '{"experts": 4}',
                 "--seed", "1"], "--moe"),
    ("expand", ["--parent", "{F}/ckpt_bad", "--out", "{O}/x", "--data", "{F}/corpus", "--recipe", '{"factor": 1}',
                "--seed", "1"], "recipe.factor"),
    ("export", ["--checkpoint", "{F}/hf_bad", "--from", "hf", "--out", "{O}/imp"], "{F}/hf_bad/config.json"),
]  # fmt: skip


def _stage_fixtures(folder: Path) -> None:
    """Small bad (and good) inputs of the stage commands."""
    write_corpus(folder / "corpus", n_train=2000, n_val=500)
    (write_corpus(folder / "corpus_bad", n_train=2000, n_val=500) / "manifest.json").write_text("{not json")
    rows = "".join(f"{n},{d},{3 + 1e3 / n + 1e4 / d}\n" for n in (1e6, 2e6, 4e6) for d in (1e7, 2e7))
    (folder / "table.csv").write_text("N,D,loss\n" + rows)
    (folder / "nonpos.csv").write_text("N,D,loss\n1e6,1e7,0\n2e6,1e7,3\n")
    (folder / "no_checkpoint.json").write_text('{"val_loss": 3.5}')
    (folder / "garbage.parquet").write_bytes(b"\x00\x01 not parquet")
    (folder / "notes.txt").write_text("notes")
    (folder / "notfit.json").write_text('{"x": 1}')
    (folder / "fits_bad").mkdir()
    (folder / "fits_bad" / "upcycled.json").write_text("{oops")
    (folder / "fits_chin").mkdir()
    chinchilla = {"law": "chinchilla", "params": {"E": 1, "A": 1, "B": 1, "alpha": 0.3, "beta": 0.3}}
    (folder / "fits_chin" / "upcycled.json").write_text(json.dumps(chinchilla))
    (folder / "bad.yaml").write_text("train: {lr: [\n")
    (folder / "badvalue.yaml").write_text("train: {lr: -1}\n")
    for name in ("hf_bad", "ckpt_bad"):
        (folder / name).mkdir()
        (folder / name / "config.json").write_text("{oops")
        (folder / name / "model.safetensors").write_bytes(b"")


def _fill(text: str, fixtures: Path, out: Path) -> str:
    return text.replace("{F}", str(fixtures)).replace("{O}", str(out))


@pytest.fixture(scope="module")
def stage_results(tmp_path_factory) -> dict[int, subprocess.CompletedProcess]:
    """Every stage case run once, two at a time."""
    fixtures, out = tmp_path_factory.mktemp("bad_inputs"), tmp_path_factory.mktemp("bad_outputs")
    _stage_fixtures(fixtures)

    def run(index: int) -> subprocess.CompletedProcess:
        stage, argv, _ = STAGE_CASES[index]
        cmd = [sys.executable, "-m", f"stages.{stage}", *(_fill(a, fixtures, out) for a in argv)]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(2) as pool:
        results = dict(enumerate(pool.map(run, range(len(STAGE_CASES)))))
    results[-1] = subprocess.CompletedProcess([], 0, str(fixtures), "")  # where {F} is, for the names
    return results


@pytest.mark.parametrize("index", range(len(STAGE_CASES)), ids=[f"{s}-{i}" for i, (s, _, _) in enumerate(STAGE_CASES)])
def test_a_bad_stage_command_is_one_line_naming_the_argument_or_file(index, stage_results):
    res = stage_results[index]
    named = STAGE_CASES[index][2].replace("{F}", stage_results[-1].stdout)
    lines = res.stderr.splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    assert named in lines[0], lines[0]
