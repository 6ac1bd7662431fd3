"""``train.backend: nanotron``: one training job run by nanotron main instead of our trainer, same outputs.

The job keeps its identity and products: the starting model is ours (a fresh model drawn with the run's
seed, or the parent checkpoint: upcycled, grown, dense) exported in nanotron's layout as
``model.init_method.path``, so both backends start from the same weights; the data are the windows our
trainer would read, in its order (:mod:`stages.interop.nanotron_data`); the YAML carries our options
(:mod:`stages.interop.nanotron_config`, which also refuses what nanotron cannot train). nanotron's final
checkpoint comes back as our checkpoint with a training run record (``backend: nanotron@<commit>``) and its
logged losses become ``metrics.csv``.

What differs from the torch backend, by construction: bf16 weights (fp32 master copies) and flash-attention
instead of our fp32 / autocast; the bf16-rounded initial weights; weight decay on norms and biases too;
the warmup one step later; ``metrics.csv`` with nanotron's 3-significant-digit losses, lr and gradient norm
and no router statistics (empty columns, no router-health verdict). A wsd budget trains as one run (the grid
makes no stable segments for this backend).

Scratch (``<work>/nanotron``): the exported init, the converted data, the tokenizer folder, ``config.yaml``,
nanotron's checkpoints every ``--save-every`` steps and ``train.log``. A rerun of the same job continues from
the last nanotron checkpoint there (optimizer, lr schedule and data position included); success removes it.
Environment: ``NANOTRON_HOME`` (the checkout), ``NANOTRON_NPROC_PER_NODE`` / SLURM for the world
(:mod:`stages.interop.nanotron_run`); ``train.micro_batch_size`` is nanotron's micro batch (0: a GPU's whole
share of the batch in one pass).
"""

from __future__ import annotations

import csv
import dataclasses
import io
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
from stages.interop.nanotron_config import NANOTRON_COMMIT, NanotronJob, check_trainable, first_lr, training_config
from stages.interop.nanotron_data import write_stream
from stages.interop.nanotron_run import (
    check_one_launcher,
    checkout_commit,
    launch_command,
    launch_env,
    nanotron_home,
    parse_log,
    run_logged,
    world_from_env,
)
from stages.model.checkpoint import checked_model, save_checkpoint
from stages.model.transformer import Transformer
from stages.training.loop import Job, StartingPoint, metrics_header, starting_point, training_record
from stages.training.runtime import configure
from stages.training.schedule import decay_steps, warmup_steps

WORK = "nanotron"
CONFIG = "config.yaml"
LOG = "train.log"
SPEC = "job.json"


@dataclass(frozen=True)
class Prepared:
    """A job made ready for nanotron: its scratch folder, YAML, starting point and launch command."""

    work: Path
    config: dict[str, Any]
    nanotron: NanotronJob
    start: StartingPoint
    corpus: Corpus
    command: list[str]
    commit: str


def prepare(job: Job, env: Mapping[str, str]) -> Prepared:
    """Check the job, then write what nanotron reads (reusing a previous attempt's files of the same job)."""
    t = job.train
    if job.stop_step or job.start_state is not None:
        raise UserError(
            "--stop-step / --start-state: the nanotron backend trains every wsd budget as one run (no branch states)"
        )
    check_one_launcher(env)
    home = nanotron_home(env)
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
    if t.eval_every:
        print(f"{job.run_id}: eval_every: nanotron runs no periodic validation (no val_loss column)", file=sys.stderr)
    tokenizer_bytes, eot_id = read_tokenizer(corpus.path("tokenizer"), cfg.vocab_size)
    size = Tokenizer.from_str(tokenizer_bytes.decode()).get_vocab_size(with_added_tokens=True)
    if size != cfg.vocab_size:
        raise UserError(
            f"{corpus.path('tokenizer')}: {size} tokens, but the model has vocab_size {cfg.vocab_size}; nanotron "
            "requires them equal (its Nanoset loader asserts len(tokenizer) == vocab_size)"
        )
    warmup = warmup_steps(steps, t.warmup_frac, fixed=t.warmup_steps)
    world = world_from_env(env)
    work = job.scratch / WORK
    nt = NanotronJob(
        run_id=job.run_id,
        seed=job.seed,
        data_seed=job.data_seed,
        model=cfg,
        train=t,
        steps=steps,
        warmup=warmup,
        decay=decay_steps(steps, warmup, t.decay_frac) if t.lr_policy == "wsd" else 0,
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
        "train_sha256": corpus.sha256("train"),
        "parent": start.parent.weights_sha256 if start.parent else "",
        "start_sequence": start.start_sequence,
    }
    digest = sha256_bytes(dumps_json(spec).encode())
    resume = None
    latest = nt.checkpoints / "latest.txt"
    if (work / SPEC).exists() and (work / SPEC).read_text().strip() == digest and latest.exists():
        resume = nt.checkpoints
        step = latest.read_text().strip()
        print(f"{job.run_id}: resuming nanotron from step {step} ({nt.checkpoints})", file=sys.stderr)
    else:
        if work.exists():
            shutil.rmtree(work)
        write_bytes(nt.tokenizer / HF_TOKENIZER, tokenizer_bytes)
        write_json(nt.tokenizer / HF_TOKENIZER_CONFIG, tokenizer_config(cfg))
        write_nanotron_model(start.model, nt.init)
        stream = TrainStream(corpus.tokens("train"), t.seq_len, job.data_seed)
        write_stream(
            stream, start.start_sequence, steps * t.batch_size, corpus.dtype, str(nt.tokenizer.resolve()), nt.data
        )
        write_text(work / SPEC, digest + "\n")
    config = training_config(dataclasses.replace(nt, resume=resume))
    write_text(work / CONFIG, yaml.safe_dump(config, sort_keys=False))
    return Prepared(work, config, nt, start, corpus, launch_command(home, work / CONFIG, world), commit)


def metrics_rows(log: dict[int, dict[str, float]], nt: NanotronJob, where: Path) -> list[dict[str, Any]]:
    """Our metrics.csv rows (every ``log_every`` steps and the last) from nanotron's per-step log.

    nanotron logs, after step ``i`` (1-based), the loss and gradient norm of that step and the lr of the next;
    a row's lr is therefore the one logged at the step before (the first step's is the schedule's start).
    """
    t = nt.train
    rows = []
    scheduler = training_config(nt)["optimizer"]["learning_rate_scheduler"]
    for step in range(nt.steps):
        if not (step % t.log_every == 0 or step == nt.steps - 1):
            continue
        entry = log.get(step + 1)
        if entry is None or "lm_loss" not in entry:
            raise UserError(f"{where}: no 'iteration: {step + 1} / {nt.steps}' line with lm_loss (did it finish?)")
        lr = first_lr(scheduler) if step == 0 else log.get(step, {}).get("lr")
        if lr is None:
            raise UserError(f"{where}: no lr logged at iteration {step}")
        rows.append(
            {
                "step": step + 1,
                "tokens": (step + 1) * t.batch_size * t.seq_len,
                "lr": float(lr),
                "train_loss": entry["lm_loss"],
                "aux_loss": 0.0,
                "z_loss": 0.0,
                "drop_rate": 0.0,
                "grad_norm": entry.get("grad_norm", float("nan")),
            }
        )
    return rows


def _csv_text(header: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")  # router columns stay empty: not logged
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def finish(job: Job, prep: Prepared) -> None:
    """Import nanotron's final checkpoint as this run's checkpoint, with its run record and metrics.csv."""
    nt, cfg = prep.nanotron, prep.start.model.cfg
    latest = nt.checkpoints / "latest.txt"
    final = nt.checkpoints / str(nt.steps)
    if not latest.exists() or latest.read_text().strip() != str(nt.steps) or not final.is_dir():
        raise UserError(f"{nt.checkpoints}: no final nanotron checkpoint of step {nt.steps} (see {prep.work / LOG})")
    state, _ = read_nanotron_state(final, cfg)
    model = checked_model(cfg, state, prep.work / CONFIG, final / "model")
    log_path = prep.work / LOG
    rows = metrics_rows(parse_log(log_path.read_text(encoding="utf-8", errors="replace")), nt, log_path)
    record = run_record(job, prep, model)
    assert job.out is not None
    write_text(job.out / "metrics.csv", _csv_text(metrics_header(model), rows))
    write_text(job.out / "nanotron.yaml", yaml.safe_dump(prep.config, sort_keys=False))
    save_checkpoint(job.out, model, record)
    shutil.rmtree(job.scratch, ignore_errors=True)


def run_record(job: Job, prep: Prepared, model: Transformer) -> RunRecord:
    """The training record of a nanotron run: the same fields the torch backend writes, plus the backend."""
    nt, start = prep.nanotron, prep.start
    schedule = {
        "warmup_steps": nt.warmup,
        "prior_steps": start.prior_steps,
        "total_steps": nt.steps,
        "decay_steps": nt.decay,
        "branch_step": 0,
    }
    n_windows = (len(prep.corpus.tokens("train")) - 1) // job.train.seq_len
    return training_record(
        job, prep.corpus, start, model.cfg, nt.steps, schedule, n_windows, backend=f"nanotron@{prep.commit}"
    )


def train_nanotron(job: Job, env: Mapping[str, str] | None = None) -> None:
    """Run ``job`` with nanotron and write its checkpoint, run record and metrics.csv (as ``loop.train``)."""
    env = dict(os.environ if env is None else env)
    prep = prepare(job, env)
    run_logged(prep.command, launch_env(env), prep.work / LOG, job.run_id)
    finish(job, prep)
