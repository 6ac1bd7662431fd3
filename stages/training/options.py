"""Typed option groups of training and evaluation: optimizer, schedule, batch, precision, device.

Torch-free: the workflow's config schema (``train`` and ``evaluate``) is generated from these classes, and
the rules hand each training job one validated ``--train`` JSON built from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stages.core.options import check_bounds, option

LRPolicy = Literal["cosine", "wsd", "constant_min", "continue"]
# seconds a process of a multi-process run waits for the others (rendezvous, each all-reduce) before it ends with
# an error naming the one that is missing; placement like threads, not a result (stages.training.distributed)
DIST_TIMEOUT = 300
DecayShape = Literal["linear", "1-sqrt", "cosine"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes what a training job computes (threads and progress saves do not)."""

    seq_len: int = option(128, help="training sequence length", unit="tokens", minimum=2)
    batch_size: int = option(16, help="sequences per optimizer step", minimum=1)
    micro_batch_size: int = option(
        0,
        help="sequences per forward pass of each process; gradients accumulate over the passes of a step. A result: "
        "MoE balancing and z losses are per pass, and sums run in another order (0: a process's whole share of "
        "batch_size in one pass)",
        minimum=0,
    )
    lr: float = option(0.003, help="peak learning rate", exclusive_minimum=0)
    min_lr_ratio: float = option(0.1, help="final learning rate / peak", minimum=0, maximum=1)
    warmup_frac: float = option(
        0.05, help="warmup steps / run steps (when warmup_steps is 0)", minimum=0, exclusive_maximum=1
    )
    warmup_steps: int = option(
        0,
        help="fixed warmup length, independent of the run's budget (0: warmup_frac of the run)",
        unit="steps",
        minimum=0,
    )
    lr_policy: LRPolicy = option(
        "cosine",
        help="cosine: warm up and decay over this run (He et al.'s reset); wsd: warm up, hold the peak, decay "
        "over the last decay_frac; constant_min: stay at the minimum; continue: the parent's cosine continued",
    )
    decay_frac: float = option(0.2, help="wsd: share of the run spent decaying", exclusive_minimum=0, maximum=1)
    decay_shape: DecayShape = option("1-sqrt", help="wsd: shape of the decay to min_lr (Hägele et al.: 1-sqrt)")
    weight_decay: float = option(0.1, help="AdamW decoupled weight decay (matrices only)", minimum=0)
    beta1: float = option(0.9, help="AdamW beta1", minimum=0, exclusive_maximum=1)
    beta2: float = option(0.95, help="AdamW beta2", minimum=0, exclusive_maximum=1)
    adam_eps: float = option(1e-8, help="AdamW epsilon", exclusive_minimum=0)
    grad_clip: float = option(1.0, help="max global gradient norm (0: off)", minimum=0)
    flops_convention: Literal["6N", "6N+attn"] = option("6N", help="training FLOPs per token counted as")
    device: str = option("cpu", help="cpu, cuda or auto")
    dtype: Literal["fp32", "bf16"] = option("fp32", help="compute precision (bf16: autocast, fp32 master weights)")
    log_every: int = option(10, help="a metrics.csv row every N steps (and the last)", unit="steps", minimum=1)
    eval_every: int = option(
        0,
        help="validation loss (a val_loss column of metrics.csv) every N steps and at the last, on the same "
        "eval_tokens of the validation shard each time; no effect on the trained weights (0: off)",
        unit="steps",
        minimum=0,
    )
    eval_tokens: int = option(
        8192, help="predicted validation tokens of each periodic evaluation", unit="tokens", minimum=1
    )
    tensorboard: bool = option(
        False,
        help="also write TensorBoard event files to <run>/tensorboard/ (needs the tensorboard package; not a "
        "declared output: they carry wall-clock times)",
    )
    backend: Literal["torch", "nanotron"] = option(
        "torch",
        help="who trains: torch (this project's trainer, CPU or CUDA) or nanotron (GPU clusters: a nanotron checkout "
        "at the pinned commit in NANOTRON_HOME runs the job; what nanotron cannot compute is refused, see "
        "stages/training/nanotron_backend.py)",
    )

    def __post_init__(self) -> None:
        check_bounds(self, "train")


@dataclass(frozen=True)
class EvalConfig:
    """The held-out measurement every run gets: the same tokens for all, so losses compare across the grid."""

    max_tokens: int = option(65536, help="predicted validation tokens per evaluation", unit="tokens", minimum=1)
    batch_size: int = option(32, help="windows per forward pass (does not change the result)", minimum=1)

    def __post_init__(self) -> None:
        check_bounds(self, "evaluate")
