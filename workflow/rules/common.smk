# Config -> grid, path templates, wildcard constraints, code hashes. No torch here: DAG building stays fast.
import os
import shlex
import sys
from pathlib import Path

# Jobs run `python -m stages.X` from this checkout (the same code the rerun hashes below are taken from),
# whether or not the package is installed.
sys.path.insert(0, workflow.basedir)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p)

from stages.core.cli import UserError
from stages.core.codehash import code_hash
from stages.workflow.config import FIGURE_FITS, validate_config
from stages.workflow.grid import RESULTS, Grid, Run

try:
    config.update(validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"))
except UserError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)

GRID = Grid(config)
PYTHON = shlex.quote(sys.executable)
CORPUS = GRID.corpus_dir
DATA = multiext(f"{CORPUS}/", "train.bin", "val.bin", "tokenizer.json", "manifest.json")
CKPT = ("model.safetensors", "config.json", "provenance.json")
SAVE_EVERY = config["train"]["save_every"]  # progress checkpoints only: deliberately not a rerun trigger
RUNS_TABLE = [f"{RESULTS}/tables/runs.csv", f"{RESULTS}/tables/runs.parquet"]
FIT_FILES = [f"{RESULTS}/fits/{name}.json" for name, fit in config["fits"].items() if fit]


wildcard_constraints:
    corpus=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    moe=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    fit=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    d1=r"[0-9]+(\.[0-9]+)?[KMBT]?",
    d2=r"[0-9]+(\.[0-9]+)?[KMBT]?",
    d=r"[0-9]+(\.[0-9]+)?[KMBT]?",
    run=r"(dense|moe|scratch|dense_cont)/.+",


def checkpoint_files(directory, *extra):
    """The declared files of a checkpoint directory (model.safetensors, config.json, provenance.json, ...)."""
    return multiext(f"{directory}/", *CKPT, *extra)
