"""A training job: its identity, inputs and options, their checks, and the model it starts from.

Every run kind trains through one job: dense, MoE from scratch, upcycled MoE, dense continued, an lr-sweep point
or a grown dense checkpoint. A job starts from a fresh model (``--model``) or a parent checkpoint (``--init``),
whose lineage and position in the shared data stream it inherits (:func:`starting_point`); both backends use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core import kinds
from stages.core.cli import UserError
from stages.core.record import Ancestor, ParentRef, RunRecord
from stages.corpus.shards import Corpus
from stages.model.checkpoint import load_model
from stages.model.config import ModelConfig
from stages.model.transformer import Transformer, seed_generator
from stages.training.options import DIST_TIMEOUT, TrainConfig

KINDS = tuple(kinds.KINDS)  # the trained run kinds (stages.core.kinds)


@dataclass(frozen=True)
class Job:
    """One training job: its identity, inputs and options (what ``python -m stages.train`` parses)."""

    kind: str
    run_id: str
    data: Path
    tokens: int
    out: Path | None  # the run directory (None for a stable segment, whose product is its branch state)
    seed: int  # initialisation seed, derived from the run identity
    data_seed: int  # seed of the shared data order
    train: TrainConfig
    model: dict[str, Any] | None = None  # a fresh model's shape (vocab and context come from the run)
    init: Path | None = None  # or the checkpoint to continue from
    labels: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    save_every: int = 0  # progress checkpoint every N steps (0: never); not a result
    dist_timeout: int = DIST_TIMEOUT  # seconds a process waits for the others of a multi-process run; not a result
    work_dir: Path | None = None
    start_state: Path | None = None  # a wsd branch state, or a part state of this job, to continue from
    stop_step: int = 0  # stop after this step and write a state (0: run to the end)
    state_out: Path | None = None  # where the state at stop_step goes (a stable segment's branch state, or a part)
    part: bool = False  # the state at stop_step is a walltime part: only the rest of this same job continues it

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"--kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.model is None) == (self.init is None):
            raise UserError("give exactly one of --model (a fresh model) and --init (a parent checkpoint)")
        if self.save_every < 0:
            raise UserError(f"--save-every: must be >= 0, got {self.save_every}")
        if self.dist_timeout < 1:
            raise UserError(f"--dist-timeout: must be >= 1 second, got {self.dist_timeout}")
        if (self.stop_step > 0) != (self.state_out is not None):
            raise UserError("--stop-step and --state-out go together (a stable segment of a wsd run, or a part)")
        if (self.out is None) == (self.state_out is None):
            raise UserError("give --out (a run directory) or, for a stable segment or a part, --state-out")
        if self.part and not self.stop_step:
            raise UserError("--part: needs --stop-step and --state-out (where the part ends and what it writes)")
        if self.stop_step and not self.part and self.train.lr_policy != "wsd":
            raise UserError("--stop-step without --part: only a wsd schedule has a stable phase to branch from")

    @property
    def scratch(self) -> Path:
        """Progress folder: --work-dir, else <root>/.work/<run_id> beside the study root the output lives under
        (results/<study>/<run_id> -> results/<study>/.work/<run_id>), else results/.work/<run_id>."""
        if self.work_dir is not None:
            return self.work_dir
        target = str(self.out) if self.out is not None else str(self.state_out).removesuffix(".pt")
        root = target.removesuffix(self.run_id)
        if root != target and root.endswith("/"):
            return Path(root) / ".work" / self.run_id
        return Path("results/.work") / self.run_id

    @property
    def chain_id(self) -> str:
        """The id of the whole job a walltime part (run id ``parts/<job>/p_<step>``) belongs to; its own otherwise."""
        part = re.fullmatch(r"parts/(.+)/p_[0-9]+", self.run_id)
        return part.group(1) if part else self.run_id

    @property
    def chain_scratch(self) -> Path:
        """The scratch folder of the whole job a walltime part belongs to (its own otherwise): where the nanotron
        backend keeps the checkpoints that the job's parts continue."""
        if self.chain_id == self.run_id or self.work_dir is not None:
            return self.scratch
        return Path(str(self.scratch).removesuffix(self.run_id)) / self.chain_id

    @property
    def tokens_per_step(self) -> int:
        return self.train.batch_size * self.train.seq_len

    def steps(self) -> int:
        """Optimizer steps of the token budget; a user error when it is not one whole step."""
        steps = self.tokens // self.tokens_per_step
        if steps < 1:
            raise UserError(f"--tokens {self.tokens}: fewer than one step of {self.tokens_per_step} tokens")
        return steps


@dataclass
class StartingPoint:
    """The model a run starts from and what it inherits from its parent checkpoint, if any."""

    model: Transformer
    lineage: tuple[Ancestor, ...] = ()
    start_sequence: int = 0  # position in the shared data stream where the parent stopped
    parent: ParentRef | None = None
    prior_steps: int = 0  # optimizer steps of the last trained ancestor (``continue`` schedule)


def starting_point(job: Job, corpus: Corpus) -> StartingPoint:
    """A fresh model or a parent checkpoint with its lineage and data position."""
    if job.init is None:
        assert job.model is not None
        if kinds.KINDS[job.kind].continues:
            raise UserError(f"--kind {job.kind}: needs --init (a parent checkpoint), not --model")
        model = fresh_model(job.model, corpus, job.train.seq_len, job.seed)
        if (model.cfg.moe is not None) != kinds.KINDS[job.kind].moe:
            want = "an MoE" if kinds.KINDS[job.kind].moe else "a dense"
            raise UserError(f"--model: --kind {job.kind} needs {want} model spec")
        return StartingPoint(model)
    model, parent = load_model(job.init)
    _check_parent(job, model, parent, corpus)
    lineage = parent.child_lineage()
    return StartingPoint(
        model=model,
        lineage=lineage,
        start_sequence=parent.data.end_sequence,
        parent=parent.as_parent(str(job.init)),
        prior_steps=next((int(a.steps) for a in reversed(lineage) if a.steps), 0),
    )


def fresh_model(spec: dict[str, Any], corpus: Corpus, seq_len: int, seed: int) -> Transformer:
    """Build and initialise a model from a shape; vocabulary and context come from the run."""
    try:
        cfg = ModelConfig.from_dict({**spec, "vocab_size": corpus.vocab_size, "max_seq_len": seq_len})
    except TypeError as err:
        raise UserError(f"--model: {err}") from None
    except UserError as err:
        raise UserError(f"--model: {err}") from None
    model = Transformer(cfg)
    model.init_weights(seed_generator(seed))
    return model


def _check_parent(job: Job, model: Transformer, parent: RunRecord, corpus: Corpus) -> None:
    kind_needs_moe = kinds.KINDS[job.kind].moe
    if (model.cfg.moe is not None) != kind_needs_moe:
        want = "an MoE" if kind_needs_moe else "a dense"
        raise UserError(f"--init {job.init}: --kind {job.kind} needs {want} checkpoint")
    corpus.check_checkpoint(model.cfg.vocab_size, parent.data.tokenizer_sha256, f"--init {job.init}")
    if model.cfg.max_seq_len < job.train.seq_len:
        raise UserError(f"seq_len {job.train.seq_len}: exceeds the checkpoint's max_seq_len {model.cfg.max_seq_len}")
