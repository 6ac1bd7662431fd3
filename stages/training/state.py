"""Training state: the model, the optimizer, the next step and the metrics rows so far; saved and restored.

One format serves three files, told apart by whose state they hold:

* a progress checkpoint (``<scratch>/progress.pt``, key ``digest``: one job's identity), written every
  ``save_every`` steps to an undeclared scratch folder. A rerun of a killed job continues from it and ends with
  the same bytes as an uninterrupted run; a file of another job is ignored. The scratch folder is removed on success.
* a branch state (``--state-out`` of a stable segment, key ``branch_digest``: a wsd family's identity), the
  product of a stable segment and what a cooldown or the next segment continues from (``--start-state``). A
  family is all of a job but its token budget and outputs: up to its decay a wsd schedule does not depend on the
  budget, so the stable prefix a branch state carries is the prefix the continuing job would have trained itself.
* a part state (``--state-out`` with ``--part``, key ``part_digest``: the family and the token budget), a
  walltime part's product: the job cut at a step, continued by the next part of the same job. It also keeps the
  branch step the job started from, so the run record of a job in parts is the record of the job in one piece."""

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

    def save(self, path: Path, owner: Owner, keep_branch_step: bool = False) -> None:
        key, digest = owner
        # Pickle writes a string once per object and then refers back to it, so the bytes depend on which keys are
        # one object. Rows read back from a state are not the rows a job built itself; interned keys make a state
        # written after a resume or a part the bytes of the state written in one go.
        state = {
            key: digest,
            "step": self.step,
            "rows": [{sys.intern(k): v for k, v in row.items()} for row in self.rows],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        if keep_branch_step:
            state["branch_step"] = self.branch_step
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            torch.save(state, fh)  # through a file object: the archive's folder is "archive", not the random temp name

    def load(self, path: Path, owners: tuple[Owner, ...], dev: torch.device) -> Owner | None:
        """Take over the state saved at ``path`` if one of ``owners`` wrote it (that owner), else change nothing
        (None)."""
        state = torch.load(path, map_location=dev, weights_only=True)
        owner = next((o for o in owners if state.get(o[0]) == o[1]), None)
        if owner is None:
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.rows = int(state["step"]), list(state["rows"])
        if "branch_step" in state:  # a part state; a branch or progress state leaves it as the job set it
            self.branch_step = int(state["branch_step"])
        return owner


@dataclass(frozen=True)
class StateFiles:
    """A job's saved states: its own progress checkpoint, the branch states of its wsd family and the part states
    of its walltime parts."""

    progress: Path
    job: Owner
    family: Owner
    parts: Owner

    @classmethod
    def of(cls, job: Job, model: Transformer, corpus: Corpus) -> StateFiles:
        job_owner = ("digest", job_digest(job, model, corpus))
        family = family_digest(job, model, corpus)
        parts = sha256_bytes(dumps_json({"family": family, "tokens": job.tokens}).encode())
        return cls(job.scratch / PROGRESS, job_owner, ("branch_digest", family), ("part_digest", parts))

    def save_progress(self, state: TrainState) -> None:
        state.save(self.progress, self.job)

    def save_state(self, state: TrainState, job: Job) -> None:
        """The state at the job's stop step: a walltime part's part state, else a stable segment's branch state."""
        assert job.state_out is not None
        if job.part:
            state.save(job.state_out, self.parts, keep_branch_step=True)
        else:
            state.save(job.state_out, self.family)

    def restore(self, state: TrainState, job: Job, schedule: Schedule, dev: torch.device, announce: bool) -> None:
        """Continue ``job`` where it stands: the state it starts from (``--start-state``: its family's branch
        state, or its own previous part), then this job's own progress checkpoint if one was saved; neither: from
        step 0. ``announce``: say which on stderr."""
        if job.start_state is not None:
            if not job.start_state.exists():
                raise UserError(f"--start-state {job.start_state}: file not found")
            owner = state.load(job.start_state, (self.family, self.parts), dev)
            if owner is None:
                raise UserError(
                    f"--start-state {job.start_state}: written by another run family or budget (model, seed, data, "
                    "tokens or options differ)"
                )
            if owner == self.family:  # a branch state: this job branches off its family's stable run here
                if job.train.lr_policy != "wsd" or state.step > schedule.decay_start:
                    raise UserError(
                        f"--start-state {job.start_state}: a branch state at step {state.step}, past this run's "
                        f"decay start {schedule.decay_start}"
                    )
                state.branch_step = state.step
        if job.part and not state.step < job.stop_step < schedule.total_steps:
            raise UserError(
                f"--stop-step {job.stop_step}: a part must end after step {state.step} and before the run's last "
                f"step {schedule.total_steps}"
            )
        if job.stop_step and not job.part and not state.step < job.stop_step <= schedule.decay_start:
            raise UserError(
                f"--stop-step {job.stop_step}: must lie after step {state.step} and not past the decay "
                f"start {schedule.decay_start} of a {job.tokens}-token wsd run"
            )
        if not self.progress.exists():
            return
        if state.load(self.progress, (self.job,), dev):
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
