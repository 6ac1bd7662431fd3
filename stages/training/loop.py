"""The torch backend's training loop, for every run kind: restore where the job stands, train its steps, finish.

AdamW with a schedule that ends at this run's own token budget, gradient clipping, and a deterministic data
stream (a continued run starts where its parent stopped; :mod:`stages.training.job`). The run directory
receives the checkpoint with its run record (:mod:`stages.training.record`) and ``metrics.csv``
(:mod:`stages.training.metrics`); a stable segment of a wsd run writes its branch state instead.

Several processes started by torchrun or srun train one run data-parallel, optionally in several passes per step
(``micro_batch_size``): :mod:`stages.training.distributed`. Rank 0 alone writes files and logs; one process in one
pass per step computes exactly what this loop computed before either existed (the same bytes).

Resumable: every ``save_every`` steps the training state goes to an undeclared scratch folder; a rerun of a
killed job continues from there and ends with the same bytes as an uninterrupted run
(:mod:`stages.training.state`). The scratch state is removed on success.

Periodic validation (``eval_every``) measures the same first ``eval_tokens`` of the validation shard each
time, under ``torch.no_grad`` in eval mode, then puts the model back in train mode: it draws no random numbers
and changes no state, so the trained weights are the same bytes with it on or off.
"""

from __future__ import annotations

import shutil
import sys
import time

import torch
from tqdm import tqdm

from stages.core.artifacts import write_text
from stages.core.cli import UserError
from stages.corpus.shards import Corpus, TrainStream, eval_windows, open_corpus
from stages.model.checkpoint import save_checkpoint
from stages.model.compute import flops_per_token
from stages.model.transformer import Transformer, cross_entropy
from stages.training.distributed import (
    BatchPlan,
    all_reduce_step,
    local_device,
    plan_batch,
    process_group,
    world_from_env,
)
from stages.training.evaluation import validation_loss
from stages.training.job import Job, StartingPoint, starting_point
from stages.training.metrics import (
    StepStats,
    Tracker,
    metrics_csv,
    metrics_header,
    metrics_row,
    router_grad_norm,
    router_health,
    router_weights,
)
from stages.training.optimizer import make_optimizer
from stages.training.options import TrainConfig
from stages.training.record import schedule_record, training_record
from stages.training.runtime import configure, device, precision
from stages.training.schedule import Schedule, decay_steps, warmup_problem, warmup_steps
from stages.training.state import StateFiles, TrainState


def train(job: Job) -> None:
    """Run ``job`` to the end and write its checkpoint, run record and metrics.csv: in this process, or as one
    of the data-parallel processes torchrun or srun started (:mod:`stages.training.distributed`)."""
    world = world_from_env()
    plan = plan_batch(world, job.train.batch_size, job.train.micro_batch_size)  # before any rendezvous
    configure(job.threads)
    dev = local_device(device(job.train.device), world)
    with process_group(world, dev, job.dist_timeout):
        _train(job, plan, dev)


def _train(job: Job, plan: BatchPlan, dev: torch.device) -> None:
    t = job.train
    main = plan.world.is_main
    evaluating = t.eval_every > 0
    corpus = open_corpus(job.data, verify=("train", "val", "tokenizer") if evaluating else ("train", "tokenizer"))
    steps = job.steps()
    start = starting_point(job, corpus)
    schedule = lr_schedule(t, steps, start.prior_steps)
    stream = TrainStream(corpus.tokens("train"), t.seq_len, job.data_seed)
    model = start.model.to(dev).train()
    state = TrainState(model, make_optimizer(model, t))
    files = StateFiles.of(job, model, corpus)
    files.restore(state, job, schedule, dev, announce=main)  # a branch state, then this job's own progress

    # the fixed evaluation slice: the first eval_tokens of the validation shard, every time
    windows = eval_windows(corpus.tokens("val"), t.seq_len, t.eval_tokens) if evaluating and main else None
    run_steps(job, plan, dev, state, files, schedule, stream, start.start_sequence, windows)
    if main:  # rank 0 writes the run's files
        finish(job, state, files, corpus, start, schedule, stream.n_windows)


def lr_schedule(t: TrainConfig, steps: int, prior_steps: int) -> Schedule:
    """The learning rate of every step of a ``steps``-step run; ``continue`` needs a trained parent."""
    if t.lr_policy == "continue" and not prior_steps:
        raise UserError("train.lr_policy continue: needs a trained parent (--init)")
    problem = warmup_problem(t.lr_policy, steps, t.warmup_steps, "the run")
    if problem:
        raise UserError(f"train.warmup_steps: {problem}")
    warmup = warmup_steps(steps, t.warmup_frac, fixed=t.warmup_steps)
    return Schedule(
        policy=t.lr_policy,
        peak_lr=t.lr,
        min_lr=t.lr * t.min_lr_ratio,
        total_steps=steps,
        warmup_steps=warmup,
        prior_steps=prior_steps,
        decay_steps=decay_steps(steps, warmup, t.decay_frac),
        decay_shape=t.decay_shape,
    )


def run_steps(
    job: Job,
    plan: BatchPlan,
    dev: torch.device,
    state: TrainState,
    files: StateFiles,
    schedule: Schedule,
    stream: TrainStream,
    start_sequence: int,
    windows: torch.Tensor | None,
) -> None:
    """Train from ``state.step`` to the job's end (its stop step, else the last step), logging metrics rows into
    ``state.rows`` and saving progress every ``save_every`` steps; ``windows``: the validation slice (rank 0)."""
    t, main = job.train, plan.world.is_main
    model, optimizer = state.model, state.optimizer
    first_step, end, last = state.step, job.stop_step or schedule.total_steps, schedule.total_steps - 1
    evaluating = t.eval_every > 0
    moe = model.cfg.moe
    aux_coef, z_coef = (moe.aux_loss_coef, moe.z_loss_coef) if moe else (0.0, 0.0)
    tracker = Tracker(job, fresh=not first_step, enabled=main)  # a resumed or branched run continues its curve
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
            batch = stream.batch(plan.offset(start_sequence + step * t.batch_size), plan.per_rank).to(dev)
            losses = forward_backward(model, batch, plan, params, (aux_coef, z_coef), t.dtype)
            if not torch.isfinite(losses.loss):  # a global mean: every process stops at the same step
                kept = f"; last good progress checkpoint kept at {files.progress}" if files.progress.exists() else ""
                raise UserError(f"{job.run_id}: non-finite training loss {float(losses.loss)} at step {step}{kept}")
            measure = evaluating and (step % t.eval_every == 0 or step == last)
            log = main and (step % t.log_every == 0 or step == last or measure)
            router_norm = router_grad_norm(routers) if log else None  # before clipping rescales the gradients
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
            state.step = step + 1
            bar.update(1)
            if log:
                row = metrics_row(step, job.tokens_per_step, lr, losses, grad_norm, model.cfg.moe_layers(), router_norm)
                if measure:  # no_grad, eval mode, no random numbers; the model goes back to train mode
                    row["val_loss"] = validation_loss(model, windows, dev=dev, dtype=t.dtype)
                    model.train()
                state.rows.append(row)
                tracker.log(row)
                rate = (step + 1 - first_step) * job.tokens_per_step / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", tok_s=f"{rate:,.0f}", refresh=False)
            if main and job.save_every and state.step % job.save_every == 0 and state.step < end:
                files.save_progress(state)
    seconds = time.perf_counter() - t0
    tracker.close()
    if main and end > first_step:
        rate = (end - first_step) * job.tokens_per_step / seconds
        fpt = flops_per_token(model.cfg, t.seq_len, t.flops_convention)
        print(
            f"{job.run_id}: {rate:,.0f} tokens/s, {rate * fpt / 1e9:.2f} GFLOP/s achieved "
            f"({t.flops_convention}), {seconds:.1f} s for {end - first_step} steps",
            file=sys.stderr,
        )


def finish(
    job: Job,
    state: TrainState,
    files: StateFiles,
    corpus: Corpus,
    start: StartingPoint,
    schedule: Schedule,
    n_windows: int,
) -> None:
    """Write what the job produces: a stable segment its branch state; a run its metrics.csv and its checkpoint
    with the run record (an MoE run's router-health verdict on stderr and in the record). Then the scratch
    folder goes."""
    model = state.model
    if job.state_out is not None:
        files.save_state(state, job)
    else:
        health = None
        moe = model.cfg.moe
        if moe is not None and state.rows:
            health = router_health(state.rows, model.cfg.moe_layers(), moe.experts, moe.top_k)
            print(f"{job.run_id}: router health: {health}", file=sys.stderr)
        model.to("cpu")
        record = training_record(
            job,
            corpus,
            start,
            model.cfg,
            schedule.total_steps,
            schedule_record(schedule, state.branch_step),
            n_windows,
            health,
        )
        assert job.out is not None
        write_text(job.out / "metrics.csv", metrics_csv(metrics_header(model, job.train.eval_every > 0), state.rows))
        save_checkpoint(job.out, model, record)
    if job.scratch.exists():
        shutil.rmtree(job.scratch)


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
