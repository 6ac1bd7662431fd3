"""nanotron's ``DistributedTrainer`` training one of our jobs as our trainer would (runs in the nanotron environment).

What the pinned commit does differently, and what this module does about it:

* learning rate: nanotron's schedule starts its warmup one step later (lr 0 at step 1) and, on a resume,
  rebuilds itself from the checkpoint's current lr and starts one step ahead. :class:`ScheduleLR` replaces it:
  the lr of optimizer step ``s`` is :meth:`stages.training.schedule.Schedule.lr` of ``s``, every policy, and a
  resume at step ``k`` continues at ``k``;
* weight decay: its exclusion list raises ``NameError`` (or excludes the wrong tensors) at this commit, so every
  tensor decayed. :func:`decay_groups` replaces the grouping: matrices decay, norms and biases do not
  (:func:`stages.model.parametrization.decays`, the torch backend's rule);
* data: after every step nanotron asks the dataset for per-folder consumption statistics, which assert an S3
  path: a local ``dataset_folder`` stopped every job after step 1. :func:`local_consumption_stats` gives the same
  statistics for any path;
* metrics: nanotron logs 3 significant digits of the LM loss and no router statistics. :class:`ProjectTrainer`
  writes one JSON line per step (rank 0): the lr the step used, the full-precision losses and the router
  statistics of every micro batch and process, and the gradient norms, as the torch backend's metrics row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nanotron.helpers
import nanotron.trainer
import torch
import torch.distributed as torch_dist
from nanotron.data.nemo_dataset import BlendableDataset
from nanotron.trainer import DistributedTrainer

from stages.interop.nanotron_model import Routing, model_class
from stages.model.parametrization import decays
from stages.training.loop import StepStats, metrics_row
from stages.training.schedule import Schedule


@dataclass(frozen=True)
class TrainerJob:
    """What the trainer needs beyond nanotron's YAML (written by the backend as ``job.json``)."""

    schedule: Schedule
    routing: Routing | None
    moe_layers: tuple[int, ...]
    experts: int
    tokens_per_step: int
    metrics: Path
    device: str  # cuda, or cpu for the CPU mode (stages.interop.nanotron_cpu)
    timeout_s: float
    stop_step: int = 0  # a walltime part: stop after this step (nanotron's final checkpoint is saved there)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainerJob:
        routing = Routing(**data["routing"]) if data["routing"] else None
        return cls(
            schedule=Schedule(**data["schedule"]),
            routing=routing,
            moe_layers=tuple(data["moe_layers"]),
            experts=int(data["experts"]),
            tokens_per_step=int(data["tokens_per_step"]),
            metrics=Path(data["metrics"]),
            device=data["device"],
            timeout_s=float(data["timeout_s"]),
            stop_step=int(data.get("stop_step", 0)),
        )


class ScheduleLR(torch.optim.lr_scheduler.LambdaLR):
    """Our schedule as the lr scheduler nanotron steps after each optimizer step; ``done`` steps already taken.

    A ``LambdaLR`` because nanotron's checkpointing expects one (one lambda per parameter group); the lr itself
    is :meth:`Schedule.lr`, not a factor of a base lr, so both backends set the same numbers.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, done: int) -> None:
        self.schedule = schedule
        factor = [lambda step: schedule.lr(step) / schedule.peak_lr] * len(optimizer.param_groups)
        super().__init__(optimizer, factor)  # sets the lr of step 0
        if done:
            self.last_epoch = done
            for group, lr in zip(optimizer.param_groups, self.get_lr(), strict=True):
                group["lr"] = lr
            self._last_lr = self.get_lr()

    def get_lr(self) -> list[float]:
        return [self.schedule.lr(self.last_epoch) for _ in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers only (loadable with ``weights_only``); the keys nanotron's own scheduler reloads on a
        resume before this one replaces it."""
        groups = len(self.optimizer.param_groups)
        return {
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "base_lrs": list(self.base_lrs),
            "_last_lr": list(self._last_lr),
            "lr_lambdas": [None] * groups,
        }


def decay_groups(named_parameters: Iterable[tuple[str, torch.Tensor]], *args: Any, **kwargs: Any) -> list[dict]:
    """nanotron's per-parameter weight-decay groups under our rule (replaces its broken exclusion list)."""
    weight_decay = kwargs["weight_decay"] if "weight_decay" in kwargs else args[2]
    return [{"named_params": [(n, p)], "weight_decay": weight_decay if decays(p) else 0.0} for n, p in named_parameters]


def local_consumption_stats(self: BlendableDataset) -> dict[str, dict[str, int]]:
    """Tokens consumed per dataset folder, for any folder (nanotron's asserts that every path is on S3)."""
    return {d.folder_path: {"tokens": self.consumed_tokens[i]} for i, d in enumerate(self.datasets)}


def install_fixes() -> None:
    """Apply the replacements above to the imported nanotron (before the trainer is built)."""
    nanotron.helpers.get_custom_weight_decay_for_named_parameters = decay_groups
    BlendableDataset.get_consumption_stats = local_consumption_stats
    clip = nanotron.trainer.clip_grad_norm

    def clip_and_measure(*, named_parameters, grad_accumulator, **kwargs: Any) -> torch.Tensor:
        """The router gradient norm before clipping (as the torch backend logs it), then nanotron's clipping."""
        grads = []
        for name, p in named_parameters:
            if name.endswith("router.weight"):
                g = grad_accumulator.get_grad_buffer(name) if grad_accumulator is not None else p.grad
                if g is not None:
                    grads.append(torch.linalg.vector_norm(g, dtype=torch.float32))
        ProjectTrainer.router_norm = torch.linalg.vector_norm(torch.stack(grads)) if grads else torch.zeros(())
        return clip(named_parameters=named_parameters, grad_accumulator=grad_accumulator, **kwargs)

    nanotron.trainer.clip_grad_norm = clip_and_measure


class ProjectTrainer(DistributedTrainer):
    """nanotron's trainer with our model class, schedule and metrics (see the module docstring)."""

    router_norm: torch.Tensor = torch.zeros(())

    def __init__(self, config_file: str, job: TrainerJob) -> None:
        self.job = job
        super().__init__(config_file, model_class=model_class(job.routing))
        base = self.optimizer.get_base_optimizer()
        self.lr_scheduler = ScheduleLR(base, job.schedule, done=self.metadata.last_train_step)
        self.lr_used = job.schedule.lr(self.metadata.last_train_step)
        self.is_main = torch_dist.get_rank(self.parallel_context.world_pg) == 0

    def pre_training(self, *args: Any, **kwargs: Any) -> None:
        """A walltime part ends its loop at its stop step; nanotron then saves its final state there."""
        if self.job.stop_step:
            self.last_iter_step = min(self.last_iter_step, self.job.stop_step)
        super().pre_training(*args, **kwargs)

    def training_step(self, dataloader: Any) -> Any:
        self.lr_used = self.optimizer.get_base_optimizer().param_groups[0]["lr"]  # the lr this step applies
        return super().training_step(dataloader=dataloader)

    def train_step_logs(self, outputs: Any, loss_avg: Any, z_loss_avg: Any, tbi_logs: Any) -> None:
        totals = torch.stack([o["stats"].float() for o in outputs]).sum(dim=0)
        dp = self.parallel_context.dp_pg
        torch_dist.all_reduce(totals, group=dp)
        passes = len(outputs) * dp.size()
        stats = StepStats.from_totals(totals.cpu(), passes, self.job.experts)
        grad_norm = getattr(self, "grad_norm_unclipped", torch.tensor(float("nan")))
        row = metrics_row(
            self.iteration_step - 1,
            self.job.tokens_per_step,
            float(self.lr_used),
            stats,
            grad_norm.cpu(),
            self.job.moe_layers,
            self.router_norm.cpu() if self.job.routing else None,
        )
        if self.is_main:
            with open(self.job.metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")
        super().train_step_logs(outputs=outputs, loss_avg=loss_avg, z_loss_avg=z_loss_avg, tbi_logs=tbi_logs)
