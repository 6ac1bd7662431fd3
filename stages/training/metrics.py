"""What a training run logs: one metrics.csv row per logged step, the router's health, TensorBoard scalars.

A row holds the step, tokens, lr, train loss, the router losses, drop rate, gradient norm and router health
(dead-expert share, tokens per expert, least-used expert's tokens, router gradient norm), then per-layer
per-expert token fractions, and ``val_loss`` when periodic validation is on. An MoE run ends with a one-line
router-health verdict (:func:`router_health`) on stderr and in its run record. Optional TensorBoard event files
(``tensorboard``) go to ``<run>/tensorboard/`` (a stable segment: beside its branch state); they carry wall-clock
times and are no declared output.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stages.core.cli import UserError
from stages.model.transformer import Output, Transformer
from stages.training.job import Job

ROUTER_COLUMNS = ["dead_experts", "min_expert_tokens", "tokens_per_expert", "router_grad_norm"]


def metrics_header(model: Transformer, val_loss: bool = False) -> list[str]:
    """The metrics.csv columns; ``val_loss`` (last) when periodic validation is on, empty between measurements."""
    cols = ["step", "tokens", "lr", "train_loss", "aux_loss", "z_loss", "drop_rate", "grad_norm", *ROUTER_COLUMNS]
    if model.cfg.moe is not None:
        cols += [f"frac_l{layer}_e{e}" for layer in model.cfg.moe_layers() for e in range(model.cfg.moe.experts)]
    return [*cols, "val_loss"] if val_loss else cols


def metrics_csv(header: list[str], rows: list[dict[str, Any]]) -> str:
    """metrics.csv: the header, then one line per row with floats to 8 significant digits."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


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
