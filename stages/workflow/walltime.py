"""Walltime-sized training jobs: how many optimizer steps one job of a training rule may take.

A SLURM job ends at its time limit (the rule's ``runtime``: its shape's, cut to ``site.max_runtime``). A run, or a
wsd stable segment, estimated to take longer is trained as a chain of parts (``Grid.parts``): each part is the
same job stopped at a step, writing a part state that the next part continues from exactly as the job would have
(stages.training.state), so the chain's products are the bytes of the job in one piece. The estimate is the job's
FLOPs at the site's stated MFU of ``site.gpu_tflops`` per GPU (the ledger's numbers), or a throughput measured on
the site (``site.tokens_per_second`` per job); a job without GPUs and without a measured throughput is never cut.
A part plans to fill :data:`FILL` of the limit, leaving the rest for start-up, evaluation and checkpoint writes.
Torch-free.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from stages.core.cli import UserError
from stages.model.compute import flops_per_token
from stages.model.config import ModelConfig
from stages.workflow.cluster import job_gpus, rule_resources, site_settings, training_job
from stages.workflow.runs import Run

FILL = 0.85  # the share of a job's time limit its training steps may take


def job_tokens_per_second(cfg: dict[str, Any], rule: str, model: ModelConfig) -> float | None:
    """Tokens per second one job of ``rule`` training ``model`` is expected to reach: the site's measured
    throughput, else its GPUs at the stated MFU; None when neither applies (a CPU job without a measurement)."""
    site = site_settings(cfg)
    if site.tokens_per_second:
        return float(site.tokens_per_second)
    gpus = job_gpus(training_job(cfg, rule))
    if not gpus:
        return None
    t = cfg["train"]
    return gpus * site.mfu * site.gpu_tflops * 1e12 / flops_per_token(model, t["seq_len"], t["flops_convention"])


def steps_per_job(cfg: dict[str, Any], rule: str, model: ModelConfig) -> int | None:
    """The most optimizer steps one job of ``rule`` training ``model`` may take within its time limit (None: no
    limit applies). A limit too short for a single step is a one-line error naming the keys to change."""
    rate = job_tokens_per_second(cfg, rule, model)
    if rate is None:
        return None
    minutes = rule_resources(cfg, rule)["runtime"]
    tokens_per_step = cfg["train"]["batch_size"] * cfg["train"]["seq_len"]
    steps = math.floor(FILL * minutes * 60.0 * rate / tokens_per_step)
    if steps < 1:
        raise UserError(
            f"config key 'site.max_runtime': {minutes} minutes do not fit one training step of rule {rule} "
            f"({tokens_per_step} tokens at an expected {rate:.3g} tokens/s); raise it or site.tokens_per_second"
        )
    return steps


def cut_points(start: int, end: int, limit: int | None) -> list[int]:
    """The steps strictly between ``start`` and ``end`` where a job of ``end - start`` steps is cut into the
    fewest parts of at most ``limit`` steps, as equal as whole steps allow ([]: it fits in one job)."""
    span = end - start
    if limit is None or span <= limit:
        return []
    parts = math.ceil(span / limit)
    return [start + (span * i) // parts for i in range(1, parts)]


@dataclass(frozen=True)
class Chain:
    """One training job of the DAG (a run, or a stable segment of a wsd family) and the walltime parts it is
    trained in: ``cuts`` are the steps where a part ends and the next one starts."""

    job: str  # its id: the run_id, or stable/<family>/b_<step>
    rule: str  # the training rule that runs it (its parts: <rule>_part)
    run: Run  # the run whose options it trains with
    start: int  # the step it starts from (0, or the branch state's step)
    end: int  # the step it stops at
    start_state: str  # the state it continues from ('' for none)
    cuts: tuple[int, ...] = ()

    def part_state(self, step: int) -> str:
        return f"{self.run.root}/parts/{self.job}/p_{step}.pt"

    def part_inputs(self, step: int) -> list[str]:
        """The state the part ending at ``step`` continues from: the previous part's, else the job's own."""
        earlier = [c for c in self.cuts if c < step]
        start = self.part_state(earlier[-1]) if earlier else self.start_state
        return [start] if start else []

    @property
    def final_inputs(self) -> list[str]:
        """The state the job's own rule (which writes its products) continues from: its last part's, else the
        job's own."""
        return self.part_inputs(self.end)

    @property
    def pieces(self) -> list[tuple[int, int]]:
        """The (first, end) steps of each job it is trained in: its parts, then its own rule's job."""
        return list(itertools.pairwise([self.start, *self.cuts, self.end]))


def segment_job(family: str, step: int | str) -> str:
    """The job id of a wsd family's stable segment that ends at ``step``."""
    return f"stable/{family}/b_{int(step)}"
