# Config -> grid, path templates, wildcard constraints, code hashes and the helper functions of the rules.
# No torch here: DAG building stays fast.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod, ExecMode

# The stages package is imported from this checkout (the same code the rerun hashes below are taken from),
# whether or not it is installed.
sys.path.insert(0, workflow.basedir)

from stages.core.cli import UserError
from stages.core.codehash import code_hash
from stages.core.kinds import KINDS, folder_pattern
from stages.report.figure_specs import FIGURE_SPECS, figure_fits
from stages.workflow.cluster import local_device_problem, rule_resources
from stages.workflow.config import corpus_vocab_size, parent_files, tokenizer_files, validate_config
from stages.workflow.grid import Grid, shape_name
from stages.workflow.walltime import segment_job
from stages.workflow.sections import TRAINING_RULES


def _job_environment():
    """Shell prefix of every job: `python -m stages.X` runs this checkout's code with the interpreter that runs
    Snakemake (or, under --software-deployment-method conda, the rule's conda environment)."""
    prefix = f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{PYTHONPATH:+:$PYTHONPATH}}; "
    if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
        prefix += f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH; "
    return prefix.replace("{", "{{").replace("}", "}}")  # shell.prefix formats its text


shell.prefix(_job_environment())

try:
    config.update(validate_config(config))
    GRID = Grid(config)  # grid.replicas names runs of the grid: checked as the grid is built
except UserError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
# The study root (stages.workflow.grid.study_root): results/<study>/, or results/ for the unnamed study. Every
# path of the rules starts here (logs and benchmarks too), so two studies never touch each other's files.
RESULTS = GRID.root
LOGS = GRID.logs
BENCHMARKS = GRID.benchmarks
CORPUS = GRID.corpus_dir
DATA = multiext(f"{CORPUS}/", "train.bin", "val.bin", "tokenizer.json", "manifest.json")
CKPT = ("model.safetensors", "config.json", "provenance.json")
RUNS_TABLE = [f"{RESULTS}/tables/runs.csv", f"{RESULTS}/tables/runs.parquet"]
ENABLED_FITS = [name for name, fit in config["fits"].items() if fit]
FIT_FILES = [f"{RESULTS}/fits/{name}.json" for name in ENABLED_FITS]
FIGURE_FILES = [f"{RESULTS}/figures/{name}.{ext}" for name in config["figures"] for ext in ("png", "pdf")]
TABLE_FILES = [f"{RESULTS}/fits/fit_params.{ext}" for ext in ("csv", "md")] if ENABLED_FITS else []
PLAN_FILES = [f"{RESULTS}/tables/plan.csv"] if config["planner"] else []
FINDINGS_FILES = [f"{RESULTS}/tables/findings.{ext}" for ext in ("csv", "md")]
# Runtime settings of training jobs, passed as arguments but deliberately not params (not rerun triggers):
# progress checkpoints only resume a killed job, and the timeout only ends a job whose processes are lost.
RUNTIME = {"save_every": config["train"]["save_every"], "dist_timeout": config["train"]["dist_timeout"]}
# Placement of each training rule's jobs (config["cluster"] and config["site"], stages.workflow.cluster): SLURM
# partition, CPUs, memory, time limit, nodes, tasks and GPUs, and `launch`, the shell prefix that starts a job's
# processes. Resources, so no rerun trigger either.
TRAINING = {rule: {**RUNTIME, **rule_resources(config, rule)} for rule in TRAINING_RULES}


def slurm(rule):
    """The SLURM resources of the jobs of ``rule``, one that trains nothing (its CPUs, memory and time limit with
    the config's `site` settings, stages.workflow.cluster.rule_resources). Every rule declares them, so a site
    setting adds to them and no --default-resources can drop them."""
    return rule_resources(config, rule)


def refuse_local_training_without_its_device():
    """Before the first job: training jobs that would run on this machine (not through a cluster executor, not a
    dry run) with a train.device it lacks end the run in one line naming the key, instead of failing after the
    data, import and surgery jobs ran."""
    plugin = workflow.executor_plugin
    if plugin is None or not plugin.common_settings.local_exec or workflow.dryrun or workflow.touch:
        return
    if workflow.exec_mode != ExecMode.DEFAULT:  # a job's own Snakemake, inside a cluster allocation
        return
    if not {job.rule.name for job in workflow.dag.needrun_jobs()} & set(TRAINING_RULES):
        return
    problem = local_device_problem(config)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


onstart:
    refuse_local_training_without_its_device()


wildcard_constraints:
    corpus=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*(@[0-9]+)?",  # s@2: the second seed of model s (grid.replicas)
    moe=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    growth=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    expansion=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    fit=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    d1=r"[0-9]+(\.[0-9]+)?[KMBT]?",
    d2=r"[0-9]+(\.[0-9]+)?[KMBT]?",
    d=r"[0-9]+(\.[0-9]+)?[KMBT]?",
    lr=r"[0-9][0-9.e+-]*",  # a peak lr as Python's repr spells it (stages.workflow.grid.lr_label)
    run=folder_pattern(),  # a run_id: the folder of a run kind (stages.core.kinds), then its path
    family=folder_pattern(branching_only=True),  # a wsd family: a run_id without its budget
    step=r"[0-9]+",
    part=r"[0-9]+",


def checkpoint_files(directory, *extra):
    """The declared files of a checkpoint directory (model.safetensors, config.json, provenance.json, ...)."""
    return multiext(f"{directory}/", *CKPT, *extra)


def fit_spec(w):
    """The fit option group of config["fits"][name] as the JSON `stages.fit --spec` reads."""
    return json.dumps(config["fits"][w.fit], sort_keys=True, separators=(",", ":"))


def figure_fit_files(w):
    """The fit files a figure draws (stages.report.figure_specs)."""
    return [f"{RESULTS}/fits/{name}.json" for name in figure_fits(w.figure, ENABLED_FITS)]


def figure_metrics(w):
    """The metrics.csv of every run of the grid, for a figure that draws them (stages.report.figure_specs)."""
    return [f"{r.directory}/metrics.csv" for r in GRID.runs] if FIGURE_SPECS[w.figure].metrics else []


# ----- training rules: one per run kind, its files named by the kind's path template (stages.core.kinds) -----


def run_output(kind):
    """The declared outputs of a run of ``kind``: its checkpoint and metrics.csv (wildcards from its template)."""
    return checkpoint_files(f"{RESULTS}/{KINDS[kind].path}", "metrics.csv")


def run_log(kind):
    """The log of a run of ``kind``: logs/<its run_id>.log."""
    return f"{LOGS}/{KINDS[kind].path}.log"


def run_benchmark(kind):
    """The benchmark of a run of ``kind``: benchmarks/<its run_id>.tsv."""
    return f"{BENCHMARKS}/{KINDS[kind].path}.tsv"


def wildcard_run(kind, w):
    """The run of ``kind`` that a training rule's wildcards name (they are the fields of its path template)."""
    return GRID.run(kind, **dict(w.items()))


def train_inputs(kind, w):
    """A training job's inputs: the corpus, the checkpoint it continues and the wsd branch state it cools down
    from (none for a fresh or independent run)."""
    run = wildcard_run(kind, w)
    init = GRID.init_dir(run)
    return {"corpus": DATA, "parent": checkpoint_files(init) if init else [], "start": GRID.start_state(run)}


def train_args(kind, w):
    """Every argument of ``stages.train`` that changes the run's result (Grid.train_args): the training rule's one
    param, so that a change of any of them reruns the job."""
    return GRID.train_args(wildcard_run(kind, w))


def stable_previous(w):
    """The state a stable segment continues from: the branch state before it, or its last walltime part ([] for
    the first segment of a family in one piece)."""
    return GRID.chains[segment_job(w.family, w.step)].final_inputs


def stable_parent(w):
    """The checkpoint a continued family (upcycled, dense continued) starts from, as declared files."""
    init = GRID.init_dir(GRID.segment(w.family, w.step).run)
    return checkpoint_files(init) if init else []


def part_job(rule_name, w):
    """The id of the job a part belongs to: a run's id from the wildcards of its kind, or a stable segment's."""
    if rule_name == "stable":
        return segment_job(w.family, w.step)
    kind = next(k for k in KINDS.values() if k.folder == rule_name)
    return GRID.run(kind.name, **{k: v for k, v in w.items() if k != "part"}).run_id


def part_inputs(rule_name, w):
    """A part's inputs: the corpus, the checkpoint its job continues, and the state it starts from."""
    chain = GRID.chains[part_job(rule_name, w)]
    init = GRID.init_dir(chain.run)
    return {
        "corpus": DATA,
        "parent": checkpoint_files(init) if init else [],
        "start": chain.part_inputs(int(w.part)),
    }


def data_files():
    """The files data.files names, folders and globs expanded (sorted) at DAG time: the data rule's input, so an
    edited, added or removed file reruns the data stage."""
    from stages.corpus.sources.files import expand_files

    return expand_files(config["data"]["files"])
