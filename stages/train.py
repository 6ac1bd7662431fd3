"""One trainer for every run kind: dense, MoE from scratch, upcycled MoE, dense continued.

``python -m stages.train --kind dense --model '{"n_layer": 2, ...}' --data results/data/pdprose \\
    --tokens 250K --run-id dense/s/d1_250K --seed 1 --data-seed 2 --out results/dense/s/d1_250K``

AdamW with a schedule that ends at this run's own token budget (``stages.schedule``), gradient
clipping, a deterministic data stream (``stages.tokens``: a continued run starts where its parent
stopped). The run directory receives the checkpoint (``stages.checkpoint``) and ``metrics.csv``
(step, tokens, lr, train loss, router losses, drop rate, per-layer per-expert token fractions).

Resumable: every ``--save-every`` steps the model, optimizer and step go to an undeclared scratch
folder (``--work-dir``, by default ``results/.work/<run-id>``); a rerun of a killed job continues from
there and ends with the same bytes as an uninterrupted run. The scratch state is removed on success.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stages.core.artifacts import atomic_path, dumps_json, sha256_bytes, write_text
from stages.model.checkpoint import lineage_entry, load_model, save_checkpoint
from stages.core.cli import ArgumentParser, UserError, parse_json_object, parse_tokens, run
from stages.core.codehash import code_hash
from stages.model.compute import FLOP_CONVENTIONS, flops_per_token, param_counts
from stages.model.transformer import Output, Transformer, cross_entropy, seed_generator
from stages.training.optimizer import AdamW
from stages.training.runtime import configure, device, precision
from stages.training.schedule import POLICIES, Schedule, warmup_steps
from stages.model.config import ModelConfig
from stages.corpus.shards import Corpus, TrainStream, open_corpus

KINDS = ("dense", "scratch_moe", "upcycled", "dense_cont")
PROGRESS = "progress.pt"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m stages.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--run-id", required=True, help="run identity, e.g. dense/s/d1_250K (names the scratch folder)")
    p.add_argument("--data", required=True, help="corpus directory with manifest.json, train.bin, tokenizer.json")
    p.add_argument("--tokens", required=True, help="training tokens of this run (e.g. 250K, 1M)")
    p.add_argument("--out", required=True, help="run directory to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="JSON model spec for a fresh model (vocab_size, max_seq_len filled in)")
    src.add_argument("--init", help="checkpoint directory to continue from (upcycled MoE, or dense parent)")
    p.add_argument("--labels", default="{}", help="JSON object of grid labels recorded in provenance")
    p.add_argument("--seed", type=int, required=True, help="initialisation seed (derived from the run identity)")
    p.add_argument("--data-seed", type=int, required=True, help="seed of the shared data order")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per optimizer step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final learning rate / peak")
    p.add_argument("--warmup-frac", type=float, default=0.05, help="warmup steps / run steps")
    p.add_argument("--lr-policy", choices=POLICIES, default="cosine")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--adam-eps", type=float, default=1e-8)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm (0: off)")
    p.add_argument("--flops-convention", choices=FLOP_CONVENTIONS, default="6N")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--log-every", type=int, default=10, help="metrics.csv row every N steps (and the last)")
    p.add_argument("--save-every", type=int, default=0, help="progress checkpoint every N steps (0: never)")
    p.add_argument("--work-dir", default=None, help="scratch folder for progress (default results/.work/<run-id>)")
    return p


def _check_args(args: Any) -> None:
    for key in ("seq_len", "batch_size", "log_every"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')}: must be >= 1, got {getattr(args, key)}")
    for key in ("lr", "weight_decay", "grad_clip", "save_every"):
        if getattr(args, key) < 0 or not math.isfinite(getattr(args, key)):
            raise UserError(f"--{key.replace('_', '-')}: must be a finite number >= 0, got {getattr(args, key)}")
    if not 0 <= args.min_lr_ratio <= 1:
        raise UserError(f"--min-lr-ratio: must be in [0, 1], got {args.min_lr_ratio}")
    if not 0 <= args.warmup_frac < 1:
        raise UserError(f"--warmup-frac: must be in [0, 1), got {args.warmup_frac}")


def fresh_model(spec_text: str, corpus: Corpus, seq_len: int, seed: int) -> Transformer:
    """Build and initialise a model from a JSON spec; vocabulary and context come from the run."""
    spec = {**parse_json_object(spec_text, "--model"), "vocab_size": corpus.vocab_size, "max_seq_len": seq_len}
    try:
        cfg = ModelConfig.from_dict(spec)
    except TypeError as err:
        raise UserError(f"--model: {err}") from None
    model = Transformer(cfg)
    model.init_weights(seed_generator(seed))
    return model


def _check_parent(args: Any, model: Transformer, parent: dict[str, Any], corpus: Corpus) -> None:
    kind_needs_moe = args.kind == "upcycled"
    if (model.cfg.moe is not None) != kind_needs_moe:
        want = "an MoE" if kind_needs_moe else "a dense"
        raise UserError(f"--init {args.init}: --kind {args.kind} needs {want} checkpoint")
    if model.cfg.vocab_size != corpus.vocab_size:
        raise UserError(
            f"--init {args.init}: vocab_size {model.cfg.vocab_size} does not match {corpus.directory}/manifest.json "
            f"({corpus.vocab_size}); the checkpoint was trained with another tokenizer"
        )
    parent_tok = parent.get("data", {}).get("tokenizer_sha256")
    if parent_tok and parent_tok != corpus.sha256("tokenizer"):
        raise UserError(
            f"--init {args.init}: its tokenizer sha256 {parent_tok[:12]}... differs from "
            f"{corpus.path('tokenizer')} ({corpus.sha256('tokenizer')[:12]}...); data and checkpoint do not match"
        )
    if model.cfg.max_seq_len < args.seq_len:
        raise UserError(f"--seq-len {args.seq_len}: exceeds the checkpoint's max_seq_len {model.cfg.max_seq_len}")


def make_optimizer(model: Transformer, args: Any) -> AdamW:
    """AdamW; matrices decay, norms and biases do not."""
    decay = [p for _, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2), eps=args.adam_eps)


def metrics_header(model: Transformer) -> list[str]:
    cols = ["step", "tokens", "lr", "train_loss", "aux_loss", "z_loss", "drop_rate", "grad_norm"]
    if model.cfg.moe is not None:
        cols += [f"frac_l{layer}_e{e}" for layer in model.cfg.moe_layers() for e in range(model.cfg.moe.experts)]
    return cols


def _csv_text(header: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def _spec_digest(args: Any, model: Transformer, corpus: Corpus) -> str:
    """Identity of a training job; a progress checkpoint is only resumed by the same job."""
    keys = sorted(k for k in vars(args) if k not in ("threads", "log_every", "save_every", "work_dir", "out"))
    spec = {k: getattr(args, k) for k in keys}
    spec["config"] = model.cfg.to_dict()
    spec["train_sha256"] = corpus.sha256("train")
    return sha256_bytes(dumps_json(spec).encode())


def _save_progress(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


@dataclass
class StartingPoint:
    """The model a run starts from and what it inherits from its parent checkpoint, if any."""

    model: Transformer
    lineage: list[dict[str, Any]] = field(default_factory=list)
    start_sequence: int = 0  # position in the shared data stream where the parent stopped
    parent: dict[str, Any] | None = None
    prior_steps: int = 0  # optimizer steps of the last trained ancestor (``continue`` schedule)


def starting_point(args: Any, corpus: Corpus) -> StartingPoint:
    """A fresh model (``--model``) or a parent checkpoint (``--init``) with its lineage and data position."""
    if not args.init:
        if args.kind in ("upcycled", "dense_cont"):
            raise UserError(f"--kind {args.kind}: needs --init (a parent checkpoint), not --model")
        model = fresh_model(args.model, corpus, args.seq_len, args.seed)
        if (model.cfg.moe is not None) != (args.kind == "scratch_moe"):
            want = "an MoE" if args.kind == "scratch_moe" else "a dense"
            raise UserError(f"--model: --kind {args.kind} needs {want} model spec")
        return StartingPoint(model)
    model, parent = load_model(args.init)
    _check_parent(args, model, parent, corpus)
    lineage = list(parent.get("lineage", [])) + [lineage_entry(parent)]
    return StartingPoint(
        model=model,
        lineage=lineage,
        start_sequence=int(parent.get("data", {}).get("end_sequence", 0)),
        parent={"path": str(args.init), "weights_sha256": parent["weights_sha256"]},
        prior_steps=next((int(e["steps"]) for e in reversed(lineage) if e.get("steps")), 0),
    )


def metrics_row(step: int, tokens_per_step: int, lr: float, ce: torch.Tensor, out: Output,
                grad_norm: torch.Tensor, moe_layers: tuple[int, ...]) -> dict[str, Any]:
    """One metrics.csv row; router statistics are averaged (drop rate) or listed per layer and expert."""
    stats = out.router_stats
    row: dict[str, Any] = {
        "step": step + 1, "tokens": (step + 1) * tokens_per_step, "lr": lr,
        "train_loss": float(ce.detach()), "aux_loss": float(out.aux_loss.detach()),
        "z_loss": float(out.z_loss.detach()), "grad_norm": float(grad_norm),
        "drop_rate": float(sum(s["drop_rate"] for s in stats) / max(1, len(stats))),
    }
    for layer, layer_stats in zip(moe_layers, stats, strict=True):
        for e, frac in enumerate(layer_stats["expert_fraction"].tolist()):
            row[f"frac_l{layer}_e{e}"] = frac
    return row


def resume(progress_path: Path, digest: str, model: Transformer, optimizer: AdamW,
           dev: torch.device) -> tuple[list[dict[str, Any]], int]:
    """Metrics rows and the next step from a progress checkpoint of this same job, else ([], 0)."""
    if not progress_path.exists():
        return [], 0
    state = torch.load(progress_path, map_location=dev, weights_only=True)
    if state.get("digest") != digest:
        print(f"ignoring {progress_path}: it belongs to a different job spec", file=sys.stderr)
        return [], 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    print(f"resuming from step {state['step']} ({progress_path})", file=sys.stderr)
    return list(state["rows"]), int(state["step"])


def train(args: Any) -> None:
    _check_args(args)
    configure(args.threads)
    dev = device(args.device)
    labels = parse_json_object(args.labels, "--labels")
    corpus = open_corpus(args.data, verify=("train", "tokenizer"))
    budget = parse_tokens(args.tokens, "--tokens")
    tokens_per_step = args.batch_size * args.seq_len
    steps = budget // tokens_per_step
    if steps < 1:
        raise UserError(f"--tokens {args.tokens}: fewer than one step of {tokens_per_step} tokens")
    start = starting_point(args, corpus)
    if args.lr_policy == "continue" and not start.prior_steps:
        raise UserError("--lr-policy continue: needs a trained parent (--init)")

    model = start.model.to(dev).train()
    optimizer = make_optimizer(model, args)
    schedule = Schedule(
        policy=args.lr_policy, peak_lr=args.lr, min_lr=args.lr * args.min_lr_ratio, total_steps=steps,
        warmup_steps=warmup_steps(steps, args.warmup_frac), prior_steps=start.prior_steps,
    )
    stream = TrainStream(corpus.tokens("train"), args.seq_len, args.data_seed)
    moe = model.cfg.moe
    aux_coef, z_coef = (moe.aux_loss_coef, moe.z_loss_coef) if moe else (0.0, 0.0)
    work = Path(args.work_dir) if args.work_dir else Path("results/.work") / args.run_id
    progress_path = work / PROGRESS
    digest = _spec_digest(args, model, corpus)
    rows, first_step = resume(progress_path, digest, model, optimizer, dev)

    params = list(model.parameters())
    max_norm = args.grad_clip if args.grad_clip > 0 else float("inf")
    t0 = time.perf_counter()
    with tqdm(total=steps, initial=first_step, desc=args.run_id, mininterval=5.0, file=sys.stderr) as bar:
        for step in range(first_step, steps):
            batch = stream.batch(start.start_sequence + step * args.batch_size, args.batch_size).to(dev)
            with precision(dev, args.dtype):
                out = model(batch[:, :-1])
            ce = cross_entropy(out.logits, batch[:, 1:])
            loss = ce + aux_coef * out.aux_loss + z_coef * out.z_loss
            if not torch.isfinite(loss):
                kept = f"; last good progress checkpoint kept at {progress_path}" if progress_path.exists() else ""
                raise UserError(f"{args.run_id}: non-finite training loss {float(loss)} at step {step}{kept}")
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
            bar.update(1)
            if step % args.log_every == 0 or step == steps - 1:
                rows.append(metrics_row(step, tokens_per_step, lr, ce, out, grad_norm, model.cfg.moe_layers()))
            if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < steps:
                _save_progress(progress_path, {"digest": digest, "step": step + 1, "rows": rows,
                                               "model": model.state_dict(), "optimizer": optimizer.state_dict()})
    seconds = time.perf_counter() - t0

    fpt = flops_per_token(model.cfg, args.seq_len, args.flops_convention)
    if steps > first_step:
        rate = (steps - first_step) * tokens_per_step / seconds
        print(f"{args.run_id}: {rate:,.0f} tokens/s, {rate * fpt / 1e9:.2f} GFLOP/s achieved "
              f"({args.flops_convention}), {seconds:.1f} s for {steps - first_step} steps", file=sys.stderr)
    model.to("cpu")
    counts = param_counts(model.cfg)
    end_sequence = start.start_sequence + steps * args.batch_size
    provenance = {
        "run_id": args.run_id,
        "kind": args.kind,
        "labels": labels,
        "seed": args.seed,
        "tokens": steps * tokens_per_step,
        "steps": steps,
        "tokens_per_step": tokens_per_step,
        "flops": fpt * steps * tokens_per_step,
        "flops_per_token": fpt,
        "flops_convention": args.flops_convention,
        "N_total": counts.total(),
        "N_active": counts.active(),
        "lr_policy": args.lr_policy,
        "peak_lr": args.lr,
        "train": {k: getattr(args, k) for k in (
            "seq_len", "batch_size", "lr", "min_lr_ratio", "warmup_frac", "lr_policy", "weight_decay", "beta1",
            "beta2", "adam_eps", "grad_clip", "dtype", "threads")},
        "schedule": {"warmup_steps": schedule.warmup_steps, "prior_steps": start.prior_steps, "total_steps": steps},
        "data": {
            "manifest": str(corpus.directory / "manifest.json"),
            "train_sha256": corpus.sha256("train"),
            "tokenizer_sha256": corpus.sha256("tokenizer"),
            "data_seed": args.data_seed,
            "start_sequence": start.start_sequence,
            "end_sequence": end_sequence,
            "epochs": stream.epochs_for(end_sequence),
        },
        "parent": start.parent,
        "lineage": start.lineage,
        "code_hash": code_hash("train"),
        "torch_version": torch.__version__,
    }
    out_dir = Path(args.out)
    write_text(out_dir / "metrics.csv", _csv_text(metrics_header(model), rows))
    save_checkpoint(out_dir, model, provenance)
    if work.exists():
        shutil.rmtree(work)


def main(argv: Sequence[str] | None = None) -> None:
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    run(main)
