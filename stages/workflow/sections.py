"""Study-level option groups: settings of the grid that are not options of any one stage.

The rest of the config schema comes from the stages' own groups (model, MoE routing, upcycling recipe,
training, evaluation, fit); these add what only the workflow uses. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stages.core.kinds import KINDS
from stages.core.options import option
from stages.training.options import DIST_TIMEOUT, LRPolicy


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
    dist_timeout: int = option(
        DIST_TIMEOUT,
        help="a multi-process training job (cluster.<rule>.tasks > 1) waits this long for a rank at the "
        "rendezvous and at every all-reduce, then ends naming the rank that died or stalled; longer than rank 0's "
        "longest pause alone (a periodic validation, a progress checkpoint). Never a rerun trigger",
        unit="seconds",
        minimum=1,
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
    gpu_type: str | None = option(
        None,
        help="GPU model of this rule's jobs (e.g. h100, as the cluster's GRES names it); null: site.gpu_type",
        schema={"type": ["string", "null"], "pattern": "^[A-Za-z0-9_.]+$"},
    )


@dataclass(frozen=True)
class Site:
    """Where the cluster runs the jobs (the ``site`` section): SLURM account, partitions, GPU model, QoS, limits.

    Read by stages.workflow.cluster into every rule's resources, on top of each rule's own numbers (CPUs, memory,
    time limit), so a site setting adds to them instead of replacing them. Placement, not a result: no reruns.
    """

    account: str | None = option(None, help="SLURM account of every job (sbatch -A); null: the executor guesses")
    cpu_partition: str | None = option(
        "cpu", help="partition of the jobs without GPUs (data, surgery, fits, figures); null: the cluster's default"
    )
    gpu_partition: str | None = option(
        "gpu", help="partition of the jobs with GPUs (training, evaluation); null: the cluster's default"
    )
    gpu_type: str | None = option(
        None,
        help="GPU model of every GPU job, as the cluster's GRES names it (e.g. h100: --gpus=h100:1); null: any GPU",
        schema={"type": ["string", "null"], "pattern": "^[A-Za-z0-9_.]+$"},
    )
    gpu_request: Literal["gpus", "gres"] = option(
        "gpus", help="how GPU jobs ask for GPUs: gpus (--gpus=h100:1) or gres (--gres=gpu:h100:1, older clusters)"
    )
    gpu_constraint: str | None = option(
        None, help="node features GPU jobs need (sbatch -C, e.g. 'h100&nvlink'); null: none"
    )
    cpu_constraint: str | None = option(None, help="node features CPU jobs need (sbatch -C); null: none")
    qos: str | None = option(None, help="quality of service of every job (sbatch --qos); null: the account's default")
    gpu_extra: str = option(
        "",
        help="more sbatch flags for GPU jobs, e.g. '--exclusive' or '--signal=USR1@120' (not the ones set by the "
        "keys above, nor memory, CPUs, tasks or time)",
    )
    max_runtime: int | None = option(
        None,
        help="the longest time limit the site allows: every job's time limit is cut to it (a cut training job "
        "resumes from its progress checkpoint when retried: raise the profile's retries); null: no cap",
        unit="minutes",
        minimum=1,
    )
    mfu: float = option(
        0.35,
        help="model FLOPs utilisation a GPU training job is expected to reach: with gpu_tflops, the time estimate "
        "that cuts a job longer than its time limit into parts (and the ledger's GPU-hours)",
        exclusive_minimum=0.0,
        maximum=1.0,
    )
    gpu_tflops: float = option(
        989.0,
        help="peak TFLOP/s of one GPU at the training precision (989: an H100 or H200 SXM, dense bf16)",
        exclusive_minimum=0.0,
    )
    tokens_per_second: float | None = option(
        None,
        help="training tokens per second one job reaches on this site, measured (the throughput line of a "
        "training log): replaces the MFU estimate, and cuts CPU jobs too; null: estimate from mfu and gpu_tflops",
        exclusive_minimum=0.0,
    )
