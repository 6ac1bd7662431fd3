"""The run record of a finished training job, whichever backend trained it: one builder for both."""

from __future__ import annotations

import torch

from stages.core.codehash import code_hash
from stages.core.machine import probe
from stages.core.options import as_dict
from stages.core.record import DataRef, RunRecord
from stages.corpus.shards import Corpus
from stages.model.compute import flops_per_token, param_counts
from stages.model.config import ModelConfig
from stages.training.job import Job, StartingPoint
from stages.training.runtime import device
from stages.training.schedule import Schedule


def training_record(
    job: Job,
    corpus: Corpus,
    start: StartingPoint,
    cfg: ModelConfig,
    steps: int,
    schedule: dict[str, int],
    n_windows: int,
    router_health: str | None = None,
    backend: str | None = None,
) -> RunRecord:
    """The run record of a finished training job, whichever backend trained it (``backend`` names another one)."""
    t = job.train
    tokens_per_step = t.batch_size * t.seq_len
    fpt = flops_per_token(cfg, t.seq_len, t.flops_convention)
    counts = param_counts(cfg)
    end_sequence = start.start_sequence + steps * t.batch_size
    dev = device(t.device)
    return RunRecord(
        run_id=job.run_id,
        kind=job.kind,
        code_hash=code_hash("train"),
        torch_version=torch.__version__,
        labels=job.labels,
        seed=job.seed,
        tokens=steps * tokens_per_step,
        steps=steps,
        tokens_per_step=tokens_per_step,
        flops=fpt * steps * tokens_per_step,
        flops_per_token=fpt,
        flops_convention=t.flops_convention,
        N_total=counts.total(),
        N_active=counts.active(),
        lr_policy=t.lr_policy,
        peak_lr=t.lr,
        train=as_dict(t),
        schedule=schedule,
        threads=job.threads,
        data=DataRef(
            manifest=str(corpus.directory / "manifest.json"),
            train_sha256=corpus.sha256("train"),
            tokenizer_sha256=corpus.sha256("tokenizer"),
            data_seed=job.data_seed,
            start_sequence=start.start_sequence,
            end_sequence=end_sequence,
            epochs=end_sequence / n_windows,
        ),
        parent=start.parent,
        lineage=start.lineage,
        router_health=router_health,
        backend=backend,
        machine=probe(torch.cuda.get_device_name(dev) if dev.type == "cuda" else ""),
    )


def schedule_record(schedule: Schedule, branch_step: int = 0) -> dict[str, int]:
    """The schedule's part of a run record (``decay_steps``: of a wsd schedule only; ``branch_step``: the step of
    the branch state a wsd cooldown continued, else 0)."""
    return {
        "warmup_steps": schedule.warmup_steps,
        "prior_steps": schedule.prior_steps,
        "total_steps": schedule.total_steps,
        "decay_steps": schedule.decay_steps if schedule.policy == "wsd" else 0,
        "branch_step": branch_step,
    }
