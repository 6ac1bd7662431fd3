"""Study-level option groups: settings of the grid that are not options of any one stage.

The rest of the config schema comes from the stages' own groups (model, MoE routing, upcycling recipe,
training, evaluation, fit); these two add what only the workflow uses. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stages.core.options import option
from stages.training.options import LRPolicy


@dataclass(frozen=True)
class StudyTraining:
    """How the study runs its training jobs (the ``train`` section, next to the training options)."""

    lr_policy: Literal["cosine", "wsd"] = option(
        "cosine",
        help="schedule of fresh runs (dense, MoE from scratch); wsd: one stable run per model, branching "
        "a cooldown for every budget (set warmup_steps)",
    )
    dense_cont_lr_policy: LRPolicy = option("cosine", help="lr policy of the dense-continued baseline")
    threads: int = option(1, help="torch threads per training job (Snakemake runs jobs in parallel)", minimum=1)
    save_every: int = option(
        100,
        help="progress checkpoint every N steps (0: off); resumes a killed job, never a rerun trigger",
        unit="steps",
        minimum=0,
    )


@dataclass(frozen=True)
class VariantTraining:
    """How an upcycled MoE variant is trained after surgery (part of each ``moe`` entry)."""

    lr_policy: LRPolicy = option(
        "cosine", help="cosine = He et al.'s reset (warm up again, decay over D2); constant_min; continue"
    )
