"""One training loop for every run kind: dense, MoE from scratch, upcycled MoE, dense continued, grown dense.

AdamW with a schedule that ends at this run's own token budget, gradient clipping, and a deterministic
data stream (a continued run starts where its parent stopped). The run directory receives the checkpoint
and ``metrics.csv`` (step, tokens, lr, train loss, validation loss every ``eval_every`` steps, router
losses, drop rate, gradient norm, router health: dead-expert share, tokens per expert, router gradient norm;
then per-layer per-expert token fractions). An MoE run ends with a one-line router-health verdict
(:func:`router_health`) on stderr and in its run record.

Several processes started by torchrun or srun train one run data-parallel, optionally in several passes per step
(``micro_batch_size``): :mod:`stages.training.distributed`. Rank 0 alone writes files and logs; one process in one
pass per step computes exactly what this loop computed before either existed (the same bytes).

Resumable: every ``save_every`` steps the model, optimizer and step go to an undeclared scratch folder; a
rerun of a killed job continues from there and ends with the same bytes as an uninterrupted run. The
scratch state is removed on success.

Periodic validation (``eval_every``) measures the same first ``eval_tokens`` of the validation shard each
time, under ``torch.no_grad`` in eval mode, then puts the model back in train mode: it draws no random numbers
and changes no state, so the trained weights are the same bytes with it on or off. Optional TensorBoard event
files (``tensorboard``) go to ``<run>/tensorboard/`` (a stable segment: beside its branch state); they carry
wall-clock times and are no declared output.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stages.core.artifacts import atomic_path, dumps_json, sha256_bytes, write_text
from stages.core.cli import UserError
from stages.core.codehash import code_hash
from stages.core.options import as_dict
from stages.core.record import Ancestor, DataRef, ParentRef, RunRecord
from stages.corpus.shards import Corpus, TrainStream, eval_windows, open_corpus
from stages.model.checkpoint import load_model, save_checkpoint
from stages.model.compute import flops_per_token, param_counts
from stages.model.config import ModelConfig
from stages.model.parametrization import optimizer_groups
from stages.model.transformer import Output, Transformer, cross_entropy, seed_generator
from stages.training.distributed import (
    BatchPlan,
    all_reduce_step,
    local_device,
    plan_batch,
    process_group,
    world_from_env,
)
from stages.training.evaluation import validation_loss
from stages.training.optimizer import AdamW
from stages.training.options import TrainConfig
from stages.training.runtime import configure, device, precision
from stages.training.schedule import Schedule, decay_steps, warmup_steps

# lr_sweep: a fresh dense run at a swept lr; grown: a grown dense checkpoint (stages.grow) trained further
KINDS = ("dense", "scratch_moe", "upcycled", "dense_cont", "lr_sweep", "grown")
PROGRESS = "progress.pt"


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
    work_dir: Path | None = None
    start_state: Path | None = None  # a stable run's branch state to continue from (wsd)
    stop_step: int = 0  # a stable segment: stop after this step and write a branch state (0: run to the end)
    state_out: Path | None = None  # where a stable segment writes its branch state

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"--kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.model is None) == (self.init is None):
            raise UserError("give exactly one of --model (a fresh model) and --init (a parent checkpoint)")
        if self.save_every < 0:
            raise UserError(f"--save-every: must be >= 0, got {self.save_every}")
        if (self.stop_step > 0) != (self.state_out is not None):
            raise UserError("--stop-step and --state-out go together (a stable segment of a wsd run)")
        if (self.out is None) == (self.state_out is None):
            raise UserError("give --out (a run directory) or, for a stable segment, --state-out")
        if (self.stop_step or self.start_state) and self.train.lr_policy != "wsd":
            raise UserError("--stop-step / --start-state: only a wsd schedule has a stable phase to branch from")

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
    kind_needs_moe = job.kind == "upcycled"
    if (model.cfg.moe is not None) != kind_needs_moe:
        want = "an MoE" if kind_needs_moe else "a dense"
        raise UserError(f"--init {job.init}: --kind {job.kind} needs {want} checkpoint")
    corpus.check_checkpoint(model.cfg.vocab_size, parent.data.tokenizer_sha256, f"--init {job.init}")
    if model.cfg.max_seq_len < job.train.seq_len:
        raise UserError(f"seq_len {job.train.seq_len}: exceeds the checkpoint's max_seq_len {model.cfg.max_seq_len}")


def make_optimizer(model: Transformer, train: TrainConfig) -> AdamW:
    """AdamW; matrices decay, norms and biases do not; under muP hidden matrices and routers get lr / m."""
    groups = optimizer_groups(model, model.cfg, train.weight_decay)
    return AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), eps=train.adam_eps)


ROUTER_COLUMNS = ["dead_experts", "min_expert_tokens", "tokens_per_expert", "router_grad_norm"]


def metrics_header(model: Transformer, val_loss: bool = False) -> list[str]:
    """The metrics.csv columns; ``val_loss`` (last) when periodic validation is on, empty between measurements."""
    cols = ["step", "tokens", "lr", "train_loss", "aux_loss", "z_loss", "drop_rate", "grad_norm", *ROUTER_COLUMNS]
    if model.cfg.moe is not None:
        cols += [f"frac_l{layer}_e{e}" for layer in model.cfg.moe_layers() for e in range(model.cfg.moe.experts)]
    return [*cols, "val_loss"] if val_loss else cols


def _csv_text(header: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def _job_digest(job: Job, model: Transformer, corpus: Corpus) -> str:
    """Identity of a training job; a progress checkpoint is only resumed by the same job."""
    spec = {
        k: str(v)
        for k, v in dataclasses.asdict(job).items()
        if k not in ("threads", "save_every", "work_dir", "out", "train")
    }
    spec["train"] = as_dict(job.train)
    spec["config"] = model.cfg.to_dict()
    spec["train_sha256"] = corpus.sha256("train")
    return sha256_bytes(dumps_json(spec).encode())


def _branch_digest(job: Job, model: Transformer, corpus: Corpus) -> str:
    """What every budget of one wsd family shares: all of a job but its token budget and outputs.

    A branch state is only continued by a job of the same family, so the stable prefix it carries is the
    prefix that job would have trained itself (the wsd schedule does not depend on the budget before its decay).
    """
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


def load_branch(
    path: Path, digest: str, model: Transformer, optimizer: AdamW, dev: torch.device
) -> tuple[list[dict[str, Any]], int]:
    """Metrics rows and the next step of a stable run's branch state (model and optimizer loaded)."""
    if not path.exists():
        raise UserError(f"--start-state {path}: file not found")
    state = torch.load(path, map_location=dev, weights_only=True)
    if state.get("branch_digest") != digest:
        raise UserError(f"--start-state {path}: written by another run family (model, seed, data or options differ)")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return list(state["rows"]), int(state["step"])


def _save_progress(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
        if job.kind in ("upcycled", "dense_cont", "grown"):
            raise UserError(f"--kind {job.kind}: needs --init (a parent checkpoint), not --model")
        model = fresh_model(job.model, corpus, job.train.seq_len, job.seed)
        if (model.cfg.moe is not None) != (job.kind == "scratch_moe"):
            want = "an MoE" if job.kind == "scratch_moe" else "a dense"
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


def router_weights(model: Transformer) -> list[torch.Tensor]:
    """The router matrix (``mlp.gate.weight``) of every MoE layer; empty for a dense model."""
    return [block.mlp.gate.weight for block in model.model.layers if block.is_moe]


@torch.no_grad()
def router_grad_norm(routers: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the routers' gradients (read, never modified); 0 for a dense model."""
    grads = [w.grad for w in routers if w.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]))


@dataclass
class StepStats:
    """The losses and router statistics of one optimizer step as logged: of its one pass, or the means over the
    passes of every process (equal passes, so a mean of fractions is the fraction of the whole batch)."""

    loss: torch.Tensor  # the optimized loss: cross-entropy plus the weighted router losses
    ce: torch.Tensor
    aux_loss: torch.Tensor
    z_loss: torch.Tensor
    router_stats: list[dict[str, torch.Tensor]]

    @classmethod
    def of_pass(cls, loss: torch.Tensor, ce: torch.Tensor, out: Output) -> StepStats:
        return cls(loss, ce, out.aux_loss, out.z_loss, out.router_stats)

    def totals(self) -> torch.Tensor:
        """This pass as one vector that sums over passes and processes: the four losses, then per MoE layer its
        drop rate, tokens per expert and expert fractions."""
        dev = self.loss.device
        parts = [torch.stack([self.loss, self.ce, self.aux_loss, self.z_loss]).detach().float()]
        for s in self.router_stats:
            parts += [torch.stack([s["drop_rate"].to(dev), s["tokens_per_expert"].to(dev)]).float()]
            parts += [s["expert_fraction"].to(dev).float()]
        return torch.cat(parts)

    @classmethod
    def from_totals(cls, totals: torch.Tensor, passes: int, experts: int) -> StepStats:
        """The step's statistics from the totals of its ``passes`` passes (tokens per expert: of the whole step;
        dead experts and the least-used expert's tokens: from the summed counts)."""
        means = totals / passes
        stats = []
        for at in range(4, len(totals), 2 + experts):
            fraction = means[at + 2 : at + 2 + experts]
            tokens_per_expert = totals[at + 1]
            counts = fraction.double() * (tokens_per_expert.double() * experts)
            stats.append(
                {
                    "expert_fraction": fraction,
                    "drop_rate": means[at],
                    "dead_share": (fraction == 0).float().mean(),
                    "tokens_per_expert": tokens_per_expert,
                    "min_expert_tokens": counts.min().round().long(),
                }
            )
        return cls(means[0], means[1], means[2], means[3], stats)


def metrics_row(
    step: int,
    tokens_per_step: int,
    lr: float,
    losses: StepStats,
    grad_norm: torch.Tensor,
    moe_layers: tuple[int, ...],
    router_norm: torch.Tensor | None = None,
) -> dict[str, Any]:
    """One metrics.csv row; router statistics are averaged (drop rate, dead share, tokens per expert), the
    minimum over layers (min expert tokens) or listed per layer and expert (fractions)."""
    stats = losses.router_stats
    layers = max(1, len(stats))
    row: dict[str, Any] = {
        "step": step + 1,
        "tokens": (step + 1) * tokens_per_step,
        "lr": lr,
        "train_loss": float(losses.ce.detach()),
        "aux_loss": float(losses.aux_loss.detach()),
        "z_loss": float(losses.z_loss.detach()),
        "grad_norm": float(grad_norm),
        "drop_rate": float(sum(s["drop_rate"] for s in stats) / layers),
        "dead_experts": float(sum(s["dead_share"] for s in stats) / layers),
        "min_expert_tokens": min((int(s["min_expert_tokens"]) for s in stats), default=0),
        "tokens_per_expert": float(sum(s["tokens_per_expert"] for s in stats) / layers),
        "router_grad_norm": 0.0 if router_norm is None else float(router_norm),
    }
    for layer, layer_stats in zip(moe_layers, stats, strict=True):
        for e, frac in enumerate(layer_stats["expert_fraction"].tolist()):
            row[f"frac_l{layer}_e{e}"] = frac
    return row


# Router-health verdict over the last HEALTH_TAIL of the logged rows (the end of training, not its warm-up).
# An expert's share of tokens is k * its fraction of assignments; under balanced routing every share is k/E.
# "collapsed": the busiest expert's mean share is closer to taking every token than to its fair share k/E
#   (threshold (1 + k/E) / 2: 0.56 for E8 k1, 0.625 for E8 k2, 0.75 for E2 k1; never reached when k = E).
#   So the verdict names a router that sends most tokens to one expert, not a mere imbalance.
# "dead experts": an expert got no token in any logged step of the tail (its mean fraction is exactly 0;
#   counts are integers, so this is not a rounding threshold).
# "balanced": neither.
HEALTH_TAIL = 0.1


def router_health(rows: list[dict[str, Any]], moe_layers: tuple[int, ...], experts: int, top_k: int) -> str:
    """One-line router-health verdict of an MoE run from its metrics rows: balanced, collapsed or dead experts."""
    tail = rows[-max(1, math.ceil(HEALTH_TAIL * len(rows))) :]
    fair = top_k / experts
    collapse_at = (1.0 + fair) / 2.0
    dead = ""
    for layer in moe_layers:
        shares = [top_k * sum(float(r[f"frac_l{layer}_e{e}"]) for r in tail) / len(tail) for e in range(experts)]
        busiest = max(range(experts), key=lambda e: shares[e])
        if shares[busiest] > collapse_at:
            return f"collapsed (layer {layer}: expert {busiest} takes {shares[busiest]:.0%} of tokens)"
        n_dead = sum(1 for s in shares if s == 0.0)
        if n_dead and not dead:
            dead = f"layer {layer}: {n_dead} of {experts} got no token in the last {HEALTH_TAIL:.0%} of logged steps"
    return f"dead experts ({dead})" if dead else "balanced"


def resume(
    progress_path: Path, digest: str, model: Transformer, optimizer: AdamW, dev: torch.device, announce: bool = True
) -> tuple[list[dict[str, Any]], int]:
    """Metrics rows and the next step from a progress checkpoint of this same job, else ([], 0)."""
    if not progress_path.exists():
        return [], 0
    state = torch.load(progress_path, map_location=dev, weights_only=True)
    if state.get("digest") != digest:
        if announce:
            print(f"ignoring {progress_path}: it belongs to a different job spec", file=sys.stderr)
        return [], 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if announce:
        print(f"resuming from step {state['step']} ({progress_path})", file=sys.stderr)
    return list(state["rows"]), int(state["step"])


class Tracker:
    """Optional TensorBoard event files beside metrics.csv: one scalar per metrics row column (no-op when off)."""

    def __init__(self, job: Job, fresh: bool, enabled: bool = True) -> None:
        self.writer = None
        if not (job.train.tensorboard and enabled):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "train.tensorboard: the tensorboard package is not installed (pip install tensorboard, or set "
                "train.tensorboard: false)"
            ) from None
        directory = (job.out if job.out is not None else Path(str(job.state_out)).parent) / "tensorboard"
        if fresh and job.out is not None and directory.exists():
            shutil.rmtree(directory)  # a rerun starts a new curve; a resumed run continues its own
        self.writer = SummaryWriter(log_dir=str(directory))

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key in ("train_loss", "val_loss", "lr", "grad_norm", "aux_loss", "z_loss", "drop_rate", "dead_experts"):
            if isinstance(row.get(key), float):
                self.writer.add_scalar(key, row[key], global_step=row["tokens"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def forward_backward(
    model: Transformer,
    batch: torch.Tensor,
    plan: BatchPlan,
    params: list[torch.Tensor],
    router_coefs: tuple[float, float],
    dtype: str,
) -> StepStats:
    """The passes of this process's share of one step, their gradients summed over every process (see
    :mod:`stages.training.distributed`); one process with one pass is the plain step, untouched."""
    dev = batch.device
    aux_coef, z_coef = router_coefs
    if plan.single_pass:
        with precision(dev, dtype):
            out = model(batch[:, :-1])
        ce = cross_entropy(out.logits, batch[:, 1:])
        loss = ce + aux_coef * out.aux_loss + z_coef * out.z_loss
        loss.backward()
        return StepStats.of_pass(loss, ce, out)
    totals = torch.zeros((), device=dev)
    for part in batch.split(plan.micro_batch):
        with precision(dev, dtype):
            out = model(part[:, :-1])
        ce = cross_entropy(out.logits, part[:, 1:])
        loss = ce + aux_coef * out.aux_loss + z_coef * out.z_loss
        (loss * plan.loss_weight).backward()
        totals = totals + StepStats.of_pass(loss, ce, out).totals()
    if plan.world.size > 1:
        totals = all_reduce_step(params, totals)
    experts = model.cfg.moe.experts if model.cfg.moe else 0
    return StepStats.from_totals(totals, plan.world.size * plan.passes, experts)


def _split_line(run_id: str, plan: BatchPlan) -> str:
    """How a step is computed, for the log: processes (and their launcher), passes, sequences per pass."""
    world = plan.world
    who = f"{world.size} processes ({world.launcher})" if world.size > 1 else "1 process"
    passes = f"{plan.passes} pass" + ("es" if plan.passes > 1 else "")
    return f"{run_id}: {who} x {passes} of {plan.micro_batch} sequences per step"


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
    )


def train(job: Job) -> None:
    """Run ``job`` to the end and write its checkpoint, run record and metrics.csv: in this process, or as one
    of the data-parallel processes torchrun or srun started (:mod:`stages.training.distributed`)."""
    world = world_from_env()
    plan = plan_batch(world, job.train.batch_size, job.train.micro_batch_size)  # before any rendezvous
    configure(job.threads)
    dev = local_device(device(job.train.device), world)
    with process_group(world, dev):
        _train(job, plan, dev)


def _train(job: Job, plan: BatchPlan, dev: torch.device) -> None:
    t = job.train
    main = plan.world.is_main
    evaluating = t.eval_every > 0
    corpus = open_corpus(job.data, verify=("train", "val", "tokenizer") if evaluating else ("train", "tokenizer"))
    tokens_per_step = t.batch_size * t.seq_len
    steps = job.tokens // tokens_per_step
    if steps < 1:
        raise UserError(f"--tokens {job.tokens}: fewer than one step of {tokens_per_step} tokens")
    start = starting_point(job, corpus)
    if t.lr_policy == "continue" and not start.prior_steps:
        raise UserError("train.lr_policy continue: needs a trained parent (--init)")

    model = start.model.to(dev).train()
    optimizer = make_optimizer(model, t)
    warmup = warmup_steps(steps, t.warmup_frac, fixed=t.warmup_steps)
    schedule = Schedule(
        policy=t.lr_policy,
        peak_lr=t.lr,
        min_lr=t.lr * t.min_lr_ratio,
        total_steps=steps,
        warmup_steps=warmup,
        prior_steps=start.prior_steps,
        decay_steps=decay_steps(steps, warmup, t.decay_frac),
        decay_shape=t.decay_shape,
    )
    stream = TrainStream(corpus.tokens("train"), t.seq_len, job.data_seed)
    moe = model.cfg.moe
    aux_coef, z_coef = (moe.aux_loss_coef, moe.z_loss_coef) if moe else (0.0, 0.0)
    progress_path = job.scratch / PROGRESS
    digest = _job_digest(job, model, corpus)
    branch_digest = _branch_digest(job, model, corpus)
    rows, first_step = [], 0
    if job.start_state is not None:
        rows, first_step = load_branch(job.start_state, branch_digest, model, optimizer, dev)
        if first_step > schedule.decay_start:
            raise UserError(
                f"--start-state {job.start_state}: step {first_step} is past this run's decay start "
                f"{schedule.decay_start}"
            )
    end = job.stop_step or steps
    if job.stop_step and not first_step < job.stop_step <= schedule.decay_start:
        raise UserError(
            f"--stop-step {job.stop_step}: must lie after step {first_step} and not past the decay "
            f"start {schedule.decay_start} of a {job.tokens}-token wsd run"
        )
    branch_step = first_step  # 0 unless this run continues a stable run
    resumed = resume(progress_path, digest, model, optimizer, dev, announce=main)
    if resumed[1]:
        rows, first_step = resumed

    # the fixed evaluation slice: the first eval_tokens of the validation shard, every time
    windows = eval_windows(corpus.tokens("val"), t.seq_len, t.eval_tokens) if evaluating and main else None
    tracker = Tracker(job, fresh=not resumed[1] and not branch_step, enabled=main)
    params = list(model.parameters())
    routers = router_weights(model)
    max_norm = t.grad_clip if t.grad_clip > 0 else float("inf")
    if main and not plan.single_pass:
        print(_split_line(job.run_id, plan), file=sys.stderr)
    t0 = time.perf_counter()
    bar = tqdm(total=end, initial=first_step, desc=job.run_id, mininterval=5.0, file=sys.stderr, disable=not main)
    with bar:
        for step in range(first_step, end):
            lr = schedule.lr(step)
            optimizer.set_lr(lr)
            optimizer.zero_grad()
            batch = stream.batch(plan.offset(start.start_sequence + step * t.batch_size), plan.per_rank).to(dev)
            losses = forward_backward(model, batch, plan, params, (aux_coef, z_coef), t.dtype)
            if not torch.isfinite(losses.loss):  # a global mean: every process stops at the same step
                kept = f"; last good progress checkpoint kept at {progress_path}" if progress_path.exists() else ""
                raise UserError(f"{job.run_id}: non-finite training loss {float(losses.loss)} at step {step}{kept}")
            measure = evaluating and (step % t.eval_every == 0 or step == steps - 1)
            log = main and (step % t.log_every == 0 or step == steps - 1 or measure)
            router_norm = router_grad_norm(routers) if log else None  # before clipping rescales the gradients
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
            bar.update(1)
            if log:
                row = metrics_row(step, tokens_per_step, lr, losses, grad_norm, model.cfg.moe_layers(), router_norm)
                if measure:  # no_grad, eval mode, no random numbers; the model goes back to train mode
                    row["val_loss"] = validation_loss(model, windows, dev=dev, dtype=t.dtype)
                    model.train()
                rows.append(row)
                tracker.log(row)
                rate = (step + 1 - first_step) * tokens_per_step / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", tok_s=f"{rate:,.0f}", refresh=False)
            if main and job.save_every and (step + 1) % job.save_every == 0 and step + 1 < end:
                _save_progress(
                    progress_path,
                    {
                        "digest": digest,
                        "step": step + 1,
                        "rows": rows,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                    },
                )
    seconds = time.perf_counter() - t0
    tracker.close()
    if not main:
        return  # rank 0 writes the run's files

    fpt = flops_per_token(model.cfg, t.seq_len, t.flops_convention)
    if end > first_step:
        rate = (end - first_step) * tokens_per_step / seconds
        print(
            f"{job.run_id}: {rate:,.0f} tokens/s, {rate * fpt / 1e9:.2f} GFLOP/s achieved "
            f"({t.flops_convention}), {seconds:.1f} s for {end - first_step} steps",
            file=sys.stderr,
        )
    if job.state_out is not None:  # a stable segment: its product is the branch state, not a checkpoint
        state = {
            "branch_digest": branch_digest,
            "step": end,
            "rows": rows,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
        }
        _save_progress(job.state_out, state)
        if job.scratch.exists():
            shutil.rmtree(job.scratch)
        return
    health = None
    if moe is not None and rows:
        health = router_health(rows, model.cfg.moe_layers(), moe.experts, moe.top_k)
        print(f"{job.run_id}: router health: {health}", file=sys.stderr)
    model.to("cpu")
    schedule_record = {
        "warmup_steps": schedule.warmup_steps,
        "prior_steps": start.prior_steps,
        "total_steps": steps,
        "decay_steps": schedule.decay_steps if t.lr_policy == "wsd" else 0,
        "branch_step": branch_step,
    }
    record = training_record(job, corpus, start, model.cfg, steps, schedule_record, stream.n_windows, health)
    assert job.out is not None
    write_text(job.out / "metrics.csv", _csv_text(metrics_header(model, evaluating), rows))
    save_checkpoint(job.out, model, record)
    if job.scratch.exists():
        shutil.rmtree(job.scratch)
