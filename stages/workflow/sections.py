"""Study-level option groups: settings of the grid that are not options of any one stage.

The rest of the config schema comes from the stages' own groups (model, MoE routing, upcycling recipe,
training, evaluation, fit); these add what only the workflow uses. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stages.core.kinds import KINDS
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


# the token-count schema of the config (stages.workflow.schema's $defs): a stated count like 2T or 4096
TOKENS_REF = {"$ref": "#/$defs/tokens"}


@dataclass(frozen=True)
class Parent:
    """An existing dense model a study starts from instead of pre-training one (a ``parents`` entry).

    Its name is a model of ``grid.upcycled`` and ``grid.dense_cont`` (their ``d1`` is then its ``tokens``): it
    is imported as the dense checkpoint ``dense/<name>/d1_<tokens>`` at the study's ``train.seq_len``, and the
    corpus is tokenized with its tokenizer when ``data.tokenizer`` names it.
    """

    hf: str = option(
        help="local Hugging Face folder of a Qwen2, Llama or Mistral model: config.json, model.safetensors (or "
        "sharded, or pytorch_model.bin) and tokenizer.json; relative to the working directory"
    )
    tokens: str = option(
        help="tokens it was pre-trained on, as its authors state them: its D1 (the path label d1_<tokens>, the "
        "runs table's D1) and, at train.flops_convention, its sunk compute",
        schema=TOKENS_REF,
    )


# the rules that run stages.train (workflow/rules/*.smk): the keys of the ``cluster`` section; the rule that trains
# a run kind is named by its folder (stages.core.kinds), and ``stable`` trains the shared stable runs of wsd
TRAINING_RULES = (*(kind.folder for kind in KINDS.values()), "stable")


@dataclass(frozen=True)
class TrainingJob:
    """Processes and GPUs of one training rule's jobs (a ``cluster`` entry, keyed by the rule's name).

    Placement, not a result, like threads: a job of 4 processes trains what a job of 1 trains, up to the order of
    float sums (stages.training.distributed), so a change here reruns nothing. The one exception is an MoE run with
    train.micro_batch_size 0, whose balancing loss sees a process's share of the batch: set micro_batch_size there.
    """

    nodes: int = option(1, help="SLURM nodes of a job; its tasks spread evenly over them", minimum=1)
    tasks: int = option(
        1,
        help="processes of a job over all nodes, one data-parallel rank each (srun's tasks in a SLURM job, "
        "torchrun --standalone elsewhere); train.batch_size must divide by it",
        minimum=1,
    )
    gpus: int | None = option(
        None, help="GPUs of a job over all nodes, spread evenly (null: one per task; 0: a CPU job)", minimum=0
    )
