"""AdamW written out: the update of ``torch.optim.AdamW`` (single-tensor path), plain tensors as state.

Why not ``torch.optim``: constructing any torch optimizer imports the torch compiler stack (about 2 s per
process on the 2-core reference machine), which is most of a tiny training job. The update below is the
same arithmetic, operation for operation, as torch's ``foreach=False`` AdamW (the tests compare them bit
for bit), and its state is three lists of tensors that a progress checkpoint stores as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from stages.model.parametrization import optimizer_groups
from stages.model.transformer import Transformer
from stages.training.options import TrainConfig


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019); per-group weight decay and lr.

    A group's ``lr_mult`` (default 1) scales the schedule's lr for it (muP's per-parameter learning rates);
    :meth:`set_lr` applies it.
    """

    def __init__(
        self, groups: Iterable[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.param_groups = [
            {
                "params": list(g["params"]),
                "weight_decay": float(g.get("weight_decay", 0.0)),
                "lr": float(g.get("lr", lr)) * float(g.get("lr_mult", 1.0)),
                "lr_mult": float(g.get("lr_mult", 1.0)),
            }
            for g in groups
        ]
        self.betas, self.eps = betas, eps
        self.steps = 0
        params = [p for g in self.param_groups for p in g["params"]]
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]

    def set_lr(self, lr: float) -> None:
        """The schedule's lr for this step, times each group's ``lr_mult``."""
        for group in self.param_groups:
            group["lr"] = lr * group["lr_mult"]

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = (1 - beta2**self.steps) ** 0.5
        i = 0
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                m, v = self.exp_avg[i], self.exp_avg_sq[i]
                i += 1
                if p.grad is None:
                    continue
                grad = p.grad
                p.mul_(1 - lr * wd)
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
                p.addcdiv_(m, denom, value=-lr / bias_correction1)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "exp_avg": list(self.exp_avg), "exp_avg_sq": list(self.exp_avg_sq)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["exp_avg"]) != len(self.exp_avg):
            raise ValueError("optimizer state does not match the parameters")
        self.steps = int(state["steps"])
        for mine, saved in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"], strict=True):
            mine.copy_(saved)


def make_optimizer(model: Transformer, train: TrainConfig) -> AdamW:
    """AdamW; matrices decay, norms and biases do not; under muP hidden matrices and routers get lr / m."""
    groups = optimizer_groups(model, model.cfg, train.weight_decay)
    return AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), eps=train.adam_eps)
