"""Training state: the model, the optimizer, the next step and the metrics rows so far; saved and restored.

One format serves two files, told apart by whose state they hold:

* a progress checkpoint (``<scratch>/progress.pt``, key ``digest``: one job's identity), written every
  ``save_every`` steps to an undeclared scratch folder. A rerun of a killed job continues from it and ends with
  the same bytes as an uninterrupted run; a file of another job is ignored. The scratch folder is removed on success.
* a branch state (``--state-out`` of a stable segment, key ``branch_digest``: a wsd family's identity), the
  product of a stable segment and what a cooldown or the next segment continues from (``--start-state``). A
  family is all of a job but its token budget and outputs: up to its decay a wsd schedule does not depend on the
  budget, so the stable prefix a branch state carries is the prefix the continuing job would have trained itself.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stages.core.artifacts import atomic_path, dumps_json, sha256_bytes
from stages.core.cli import UserError
from stages.core.options import as_dict
from stages.corpus.shards import Corpus
from stages.model.transformer import Transformer
from stages.training.job import Job
from stages.training.optimizer import AdamW
from stages.training.schedule import Schedule

PROGRESS = "progress.pt"

Owner = tuple[str, str]  # the key a saved state names its owner under, and the owner's digest


@dataclass
class TrainState:
    """Where a run stands: what a saved state holds (model, optimizer, next step, metrics rows), and the step of
    the branch state it continued from (0: none), which no saved state holds."""

    model: Transformer
    optimizer: AdamW
    step: int = 0  # the next step to train
    rows: list[dict[str, Any]] = field(default_factory=list)
    branch_step: int = 0

    def save(self, path: Path, owner: Owner) -> None:
        key, digest = owner
        state = {
            key: digest,
            "step": self.step,
            "rows": self.rows,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            torch.save(state, fh)  # through a file object: the archive's folder is "archive", not the random temp name

    def load(self, path: Path, owner: Owner, dev: torch.device) -> bool:
        """Take over the state saved at ``path`` if ``owner`` wrote it (True), else change nothing (False)."""
        key, digest = owner
        state = torch.load(path, map_location=dev, weights_only=True)
        if state.get(key) != digest:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.rows = int(state["step"]), list(state["rows"])
        return True


@dataclass(frozen=True)
class StateFiles:
    """A job's saved states: its own progress checkpoint, and the branch states of its wsd family."""

    progress: Path
    job: Owner
    family: Owner

    @classmethod
    def of(cls, job: Job, model: Transformer, corpus: Corpus) -> StateFiles:
        job_owner = ("digest", job_digest(job, model, corpus))
        return cls(job.scratch / PROGRESS, job_owner, ("branch_digest", family_digest(job, model, corpus)))

    def save_progress(self, state: TrainState) -> None:
        state.save(self.progress, self.job)

    def save_branch(self, state: TrainState, path: Path) -> None:
        state.save(path, self.family)

    def restore(self, state: TrainState, job: Job, schedule: Schedule, dev: torch.device, announce: bool) -> None:
        """Continue ``job`` where it stands: its family's branch state (``--start-state``), then this job's own
        progress checkpoint if one was saved; neither: from step 0. ``announce``: say which on stderr."""
        if job.start_state is not None:
            if not job.start_state.exists():
                raise UserError(f"--start-state {job.start_state}: file not found")
            if not state.load(job.start_state, self.family, dev):
                raise UserError(
                    f"--start-state {job.start_state}: written by another run family (model, seed, data or options "
                    "differ)"
                )
            if state.step > schedule.decay_start:
                raise UserError(
                    f"--start-state {job.start_state}: step {state.step} is past this run's decay start "
                    f"{schedule.decay_start}"
                )
            state.branch_step = state.step
        if job.stop_step and not state.step < job.stop_step <= schedule.decay_start:
            raise UserError(
                f"--stop-step {job.stop_step}: must lie after step {state.step} and not past the decay "
                f"start {schedule.decay_start} of a {job.tokens}-token wsd run"
            )
        if not self.progress.exists():
            return
        if state.load(self.progress, self.job, dev):
            if announce:
                print(f"resuming from step {state.step} ({self.progress})", file=sys.stderr)
        elif announce:
            print(f"ignoring {self.progress}: it belongs to a different job spec", file=sys.stderr)


def job_digest(job: Job, model: Transformer, corpus: Corpus) -> str:
    """Identity of a training job; a progress checkpoint is only resumed by the same job."""
    spec = {
        k: str(v)
        for k, v in dataclasses.asdict(job).items()
        if k not in ("threads", "save_every", "dist_timeout", "work_dir", "out", "train")
    }
    spec["train"] = as_dict(job.train)
    spec["config"] = model.cfg.to_dict()
    spec["train_sha256"] = corpus.sha256("train")
    return sha256_bytes(dumps_json(spec).encode())


def family_digest(job: Job, model: Transformer, corpus: Corpus) -> str:
    """What every budget of one wsd family shares: all of a job but its token budget and outputs."""
    spec = {
        "kind": job.kind,
        "seed": job.seed,
        "data_seed": job.data_seed,
        "model": job.model,
        "init": str(job.init),
        "train": as_dict(job.train),
        "config": model.cfg.to_dict(),
        "train_sha256": corpus.sha256("train"),
    }
    return sha256_bytes(dumps_json(spec).encode())
