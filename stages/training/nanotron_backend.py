"""``train.backend: nanotron``: one training job run by nanotron's trainer instead of ours, same science, same outputs.

The job keeps its identity and products: the starting model is ours (a fresh model drawn with the run's
seed, or the parent checkpoint: upcycled, grown, dense) exported in nanotron's layout as
``model.init_method.path``, so both backends start from the same weights; the data are the windows our
trainer would read, in its order (:mod:`stages.interop.nanotron_data`); the YAML carries our options
(:mod:`stages.interop.nanotron_config`). nanotron runs through our entry point
(:mod:`stages.interop.nanotron_entry`) with our model class (the same routed MoE layer, balancing and z-losses
as the torch backend), our schedule (every policy, warmup aligned), our weight-decay groups and an exact resume
(:mod:`stages.interop.nanotron_trainer`). Its final checkpoint comes back as our checkpoint with a training run
record (``backend: nanotron@<commit>``); the trainer's full-precision per-step metrics (losses, lr, gradient
norms, router statistics) become ``metrics.csv``, with the torch backend's columns and router-health verdict.

What still differs from the torch backend: on GPUs, bf16 weights with fp32 master copies and flash-attention
(ours: fp32 or autocast); nanotron's AdamW (torch's) instead of our written-out one, equal to rounding; no periodic
validation. ``train.device: cpu`` is the CPU mode (gloo, pure-torch kernels; fp32 gives the torch backend's
losses to ~1e-6): for checking a cluster job on a laptop and for tests, not for speed. A wsd budget trains as
one run (the grid makes no stable segments for this backend).

Scratch (``<work>/nanotron``): the exported init, the converted data, the tokenizer folder, ``config.yaml``,
``job.json``, ``metrics.jsonl``, nanotron's checkpoints every ``--save-every`` steps and ``train.log``. A rerun of
the same job continues from the last nanotron checkpoint there (optimizer, lr, data position); success removes
it. Environment: :mod:`stages.interop.nanotron_run` (``NANOTRON_HOME``, ``NANOTRON_PYTHON``,
``NANOTRON_NPROC_PER_NODE`` / SLURM for the world); ``train.micro_batch_size`` is nanotron's micro batch
(0: a process's whole share of the batch in one pass).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tokenizers import Tokenizer

from stages.core.artifacts import dumps_json, sha256_bytes, write_bytes, write_json, write_text
from stages.core.cli import UserError
from stages.core.record import RunRecord
from stages.corpus.shards import Corpus, TrainStream, open_corpus
from stages.interop.hf import HF_TOKENIZER, HF_TOKENIZER_CONFIG, read_tokenizer, tokenizer_config
from stages.interop.nanotron import read_nanotron_state, write_nanotron_model
from stages.interop.nanotron_config import (
    NANOTRON_COMMIT,
    NanotronJob,
    check_trainable,
    routing_options,
    training_config,
)
from stages.interop.nanotron_data import write_stream
from stages.interop.nanotron_run import (
    check_one_launcher,
    checkout_commit,
    launch_command,
    launch_env,
    nanotron_home,
    nanotron_python,
    run_logged,
    world_from_env,
)
from stages.model.checkpoint import checked_model, save_checkpoint
from stages.model.transformer import Transformer
from stages.training.job import Job, StartingPoint, starting_point
from stages.training.loop import lr_schedule
from stages.training.metrics import metrics_csv, metrics_header, router_health
from stages.training.record import schedule_record, training_record
from stages.training.runtime import configure
from stages.training.schedule import Schedule

WORK = "nanotron"
CONFIG = "config.yaml"
TRAINER_JOB = "job.json"
METRICS = "metrics.jsonl"
LOG = "train.log"
SPEC = "spec.sha256"
PART_KEY = "nanotron_part_digest"  # a part state's key: the digest of the job it is a part of
PROCESS_GROUP_TIMEOUT_S = 600.0  # the CPU mode's gloo group (nanotron sets its own on GPUs)


@dataclass(frozen=True)
class Prepared:
    """A job made ready for nanotron: its scratch folder, YAML, schedule, starting point and launch command."""

    work: Path
    config: dict[str, Any]
    nanotron: NanotronJob
    schedule: Schedule
    start: StartingPoint
    corpus: Corpus
    command: list[str]
    env: dict[str, str]
    commit: str


def trainer_job(nt: NanotronJob, schedule: Schedule, metrics: Path, threads: int) -> dict[str, Any]:
    """``job.json``: what our trainer inside nanotron needs beyond the YAML
    (:class:`stages.interop.nanotron_trainer.TrainerJob`)."""
    cfg, t, moe = nt.model, nt.train, nt.model.moe
    return {
        "schedule": dataclasses.asdict(schedule),
        "routing": routing_options(cfg),
        "moe_layers": list(cfg.moe_layers()) if moe is not None else [],
        "experts": moe.experts if moe is not None else 0,
        "tokens_per_step": t.batch_size * t.seq_len,
        "metrics": str(metrics.resolve()),
        "device": t.device,
        "timeout_s": PROCESS_GROUP_TIMEOUT_S,
        "threads": threads,
    }


def prepare(job: Job, env: Mapping[str, str]) -> Prepared:
    """Check the job, then write what nanotron reads (reusing a previous attempt's files of the same job)."""
    t = job.train
    if job.stop_step and not job.part:
        raise UserError("--stop-step: the nanotron backend trains every wsd budget as one run (no branch states)")
    check_one_launcher(env)
    home = nanotron_home(env)
    python = nanotron_python(env)
    commit = checkout_commit(home)
    if commit != NANOTRON_COMMIT:
        print(f"warning: {home} is at commit {commit}, not the pinned {NANOTRON_COMMIT}", file=sys.stderr)
    configure(job.threads)
    corpus = open_corpus(job.data, verify=("train", "tokenizer"))
    tokens_per_step = t.batch_size * t.seq_len
    steps = job.tokens // tokens_per_step
    if steps < 1:
        raise UserError(f"--tokens {job.tokens}: fewer than one step of {tokens_per_step} tokens")
    start = starting_point(job, corpus)
    cfg = start.model.cfg
    check_trainable(cfg, t)
    schedule = lr_schedule(t, steps, start.prior_steps)
    if t.eval_every:
        print(f"{job.run_id}: eval_every: nanotron runs no periodic validation (no val_loss column)", file=sys.stderr)
    tokenizer_bytes, eot_id = read_tokenizer(corpus.path("tokenizer"), cfg.vocab_size)
    size = Tokenizer.from_str(tokenizer_bytes.decode()).get_vocab_size(with_added_tokens=True)
    if size != cfg.vocab_size:
        raise UserError(
            f"{corpus.path('tokenizer')}: {size} tokens, but the model has vocab_size {cfg.vocab_size}; nanotron "
            "requires them equal (its Nanoset loader asserts len(tokenizer) == vocab_size)"
        )
    world = world_from_env(env)
    work = job.chain_scratch / WORK  # a walltime part trains in the scratch of the job it belongs to
    nt = NanotronJob(
        run_id=job.chain_id,
        seed=job.seed,
        data_seed=job.data_seed,
        model=cfg,
        train=t,
        steps=steps,
        warmup=schedule.warmup_steps,
        decay=schedule.decay_steps if t.lr_policy == "wsd" else 0,
        dp=world.size,
        micro_batch=t.micro_batch_size or max(1, t.batch_size // world.size),
        eot_id=eot_id,
        init=work / "init",
        data=work / "data",
        tokenizer=work / "tokenizer",
        token_size=corpus.dtype.itemsize,
        checkpoints=work / "checkpoints",
        checkpoint_interval=job.save_every if job.save_every > 0 else steps,
    )
    spec = {
        "config": training_config(nt),
        "trainer": trainer_job(nt, schedule, work / METRICS, job.threads),
        "train_sha256": corpus.sha256("train"),
        "parent": start.parent.weights_sha256 if start.parent else "",
        "start_sequence": start.start_sequence,
    }
    digest = sha256_bytes(dumps_json(spec).encode())  # every part of a job has the job's digest
    resume = None
    latest = nt.checkpoints / "latest.txt"
    if job.start_state is not None:
        check_part(job.start_state, digest, latest)
    if (work / SPEC).exists() and (work / SPEC).read_text().strip() == digest and latest.exists():
        resume = nt.checkpoints
        step = latest.read_text().strip()
        print(f"{job.run_id}: resuming nanotron from step {step} ({nt.checkpoints})", file=sys.stderr)
    else:
        if work.exists():
            shutil.rmtree(work)
        write_bytes(nt.tokenizer / HF_TOKENIZER, tokenizer_bytes)
        write_json(nt.tokenizer / HF_TOKENIZER_CONFIG, tokenizer_config(cfg))
        write_nanotron_model(start.model, nt.init, routed=True)
        stream = TrainStream(corpus.tokens("train"), t.seq_len, job.data_seed)
        write_stream(
            stream, start.start_sequence, steps * t.batch_size, corpus.dtype, str(nt.tokenizer.resolve()), nt.data
        )
        write_text(work / SPEC, digest + "\n")
    config = training_config(dataclasses.replace(nt, resume=resume))
    write_text(work / CONFIG, yaml.safe_dump(config, sort_keys=False))
    write_json(work / TRAINER_JOB, {**spec["trainer"], "stop_step": job.stop_step if job.part else 0})
    command = launch_command(python, work / CONFIG, work / TRAINER_JOB, world)
    return Prepared(work, config, nt, schedule, start, corpus, command, launch_env(env, home, python), commit)


def read_metrics(path: Path) -> dict[int, dict[str, Any]]:
    """Step -> the trainer's metrics row; the last line of a step wins (a resumed job logs the steps after its
    checkpoint again)."""
    rows: dict[int, dict[str, Any]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UserError(f"{path}: cannot read the trainer's metrics ({err.strerror})") from None
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            rows[int(row["step"])] = row
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}:{number}: not a metrics line (a JSON object with 'step')") from None
    return rows


def metrics_rows(logged: dict[int, dict[str, Any]], nt: NanotronJob, where: Path) -> list[dict[str, Any]]:
    """Our metrics.csv rows (every ``log_every`` steps and the last) from the trainer's per-step rows."""
    rows = []
    for step in range(nt.steps):
        if not (step % nt.train.log_every == 0 or step == nt.steps - 1):
            continue
        row = logged.get(step + 1)
        if row is None:
            raise UserError(f"{where}: no metrics for step {step + 1} of {nt.steps} (did it finish?)")
        rows.append(row)
    return rows


def check_part(path: Path, digest: str, latest: Path) -> None:
    """``--start-state`` of a nanotron job: the part state of an earlier part of this job, whose nanotron
    checkpoint is still in the job's scratch folder (where this part resumes from)."""
    try:
        part = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"--start-state {path}: not a nanotron part state ({err})") from None
    if not isinstance(part, dict) or part.get(PART_KEY) != digest:
        raise UserError(f"--start-state {path}: not a part of this job (another run, budget or options)")
    if not latest.exists() or int(latest.read_text().strip()) < int(part["step"]):
        raise UserError(
            f"--start-state {path}: the nanotron checkpoint of step {part['step']} is gone from {latest.parent}; "
            "rerun the job's parts"
        )


def finish_part(job: Job, prep: Prepared) -> None:
    """A walltime part: nanotron's checkpoint at the stop step stays in the job's scratch folder for the next
    part; the part state names it (and the job's digest, which the next part checks)."""
    latest = prep.nanotron.checkpoints / "latest.txt"
    if not latest.exists() or latest.read_text().strip() != str(job.stop_step):
        raise UserError(f"{prep.nanotron.checkpoints}: no nanotron checkpoint of step {job.stop_step}")
    assert job.state_out is not None
    digest = (prep.work / SPEC).read_text().strip()
    state = {PART_KEY: digest, "step": job.stop_step, "checkpoints": str(prep.nanotron.checkpoints)}
    write_text(job.state_out, json.dumps(state, sort_keys=True, indent=2) + "\n")


def finish(job: Job, prep: Prepared) -> None:
    """Import nanotron's final checkpoint as this run's checkpoint, with its run record and metrics.csv."""
    nt, cfg = prep.nanotron, prep.start.model.cfg
    latest = nt.checkpoints / "latest.txt"
    final = nt.checkpoints / str(nt.steps)
    if not latest.exists() or latest.read_text().strip() != str(nt.steps) or not final.is_dir():
        raise UserError(f"{nt.checkpoints}: no final nanotron checkpoint of step {nt.steps} (see {prep.work / LOG})")
    state, _ = read_nanotron_state(final, cfg)
    model = checked_model(cfg, state, prep.work / CONFIG, final / "model")
    rows = metrics_rows(read_metrics(prep.work / METRICS), nt, prep.work / METRICS)
    health = None
    if cfg.moe is not None and rows:
        health = router_health(rows, cfg.moe_layers(), cfg.moe.experts, cfg.moe.top_k)
        print(f"{job.run_id}: router health: {health}", file=sys.stderr)
    record = run_record(job, prep, model, health)
    assert job.out is not None
    write_text(job.out / "metrics.csv", metrics_csv(metrics_header(model), rows))
    write_text(job.out / "nanotron.yaml", yaml.safe_dump(prep.config, sort_keys=False))
    save_checkpoint(job.out, model, record)
    shutil.rmtree(job.chain_scratch, ignore_errors=True)


def run_record(job: Job, prep: Prepared, model: Transformer, health: str | None) -> RunRecord:
    """The training record of a nanotron run: the same fields the torch backend writes, plus the backend."""
    n_windows = (len(prep.corpus.tokens("train")) - 1) // job.train.seq_len
    return training_record(
        job,
        prep.corpus,
        prep.start,
        model.cfg,
        prep.nanotron.steps,
        schedule_record(prep.schedule),
        n_windows,
        health,
        backend=f"nanotron@{prep.commit}",
    )


def train_nanotron(job: Job, env: Mapping[str, str] | None = None) -> None:
    """Run ``job`` with nanotron and write its checkpoint, run record and metrics.csv (as ``loop.train``)."""
    env = dict(os.environ if env is None else env)
    prep = prepare(job, env)
    run_logged(prep.command, prep.env, prep.work / LOG, job.run_id)
    if job.part:
        finish_part(job, prep)
    else:
        finish(job, prep)
