"""The compute ledger of a grid: FLOPs and GPU-hours of every job the DAG would run, before anything runs.

It counts what is really trained, from the same :class:`Grid` the Snakefile builds: independent runs train
their whole budget (whole optimizer steps); under a wsd schedule each family's stable run is counted once
(its segments, ``Grid.segments``) plus one cooldown per budget (from ``Grid.branch_step`` to the end).
Training FLOPs per token follow ``train.flops_convention`` (``stages.model.compute``). Evaluation is counted
roughly as forward passes (a third of the training FLOPs per token): ``evaluate.max_tokens`` per run, and
``upcycle_eval_tokens`` through the dense parent and the new MoE at every upcycling (and through the parent and
the grown model at every growth: ``grow_eval``; through the parent MoE and the expanded one at every expansion, plus
the utility batches' forward and backward passes through the parent: ``expand_eval``). Torch-free.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.kinds import EXPANDED, KINDS
from stages.model.compute import flops_per_token
from stages.workflow.cluster import rule_resources, site_settings
from stages.workflow.config import expansion_recipe, growth_target, load_yaml, model_config, validate_config
from stages.workflow.grid import Grid, Run, shape_name
from stages.workflow.walltime import job_tokens_per_second

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
CHECKS = ("upcycle_eval", "grow_eval", "expand_eval", "evaluate")  # the jobs that only evaluate (forward passes)
KIND_ORDER = (*KINDS, "stable", *CHECKS)  # the ledger's lines: every run kind, the wsd stable runs, the evaluations


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's config overlay: mappings merge key by key, everything else (lists too) replaces."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(configfiles: list[str | Path], default: str | Path | None = DEFAULT_CONFIG) -> dict[str, Any]:
    """The validated config Snakemake would build: the default config, then each ``--configfile`` on top."""
    cfg: dict[str, Any] = load_yaml(default) if default is not None else {}
    for path in configfiles:
        cfg = merge(cfg, load_yaml(path))
    return validate_config(cfg)


@dataclass(frozen=True)
class Line:
    """One job of the ledger (a training run, a stable segment, an evaluation or an upcycling's check)."""

    kind: str
    job: str
    tokens: int
    flops: float


def ledger_lines(cfg: dict[str, Any]) -> list[Line]:
    """Every job of the validated config ``cfg`` with the tokens it processes and its FLOPs."""
    grid = Grid(cfg)
    t = cfg["train"]
    tps = grid.tokens_per_step
    conv = t["flops_convention"]

    def fpt(run: Run) -> float:
        return flops_per_token(grid.trained_model(run), t["seq_len"], conv)

    lines: list[Line] = []
    for seg in grid.segments.values():
        tokens = (seg.step - seg.previous) * tps
        lines.append(Line("stable", seg.state, tokens, fpt(seg.run) * tokens))
    eval_tokens = cfg["evaluate"]["max_tokens"]
    for run in grid.runs:
        tokens = (grid.steps(run) - grid.branch_step(run)) * tps
        lines.append(Line(run.kind, run.run_id, tokens, fpt(run) * tokens))
        lines.append(Line("evaluate", run.eval_json, eval_tokens, fpt(run) / 3.0 * eval_tokens))
    check = cfg["upcycle_eval_tokens"]
    for init in grid.upcycle_inits():
        _, model, d1, moe = init.rsplit("/", 3)
        dense = flops_per_token(model_config(cfg, shape_name(model)), t["seq_len"], conv)
        sparse = flops_per_token(model_config(cfg, shape_name(model), moe), t["seq_len"], conv)
        lines.append(Line("upcycle_eval", init, 2 * check, (dense + sparse) / 3.0 * check))
    for init in grid.grow_inits():
        _, model, d1, growth = init.rsplit("/", 3)
        parent = flops_per_token(model_config(cfg, shape_name(model)), t["seq_len"], conv)
        grown = flops_per_token(model_config(cfg, growth_target(cfg, growth)), t["seq_len"], conv)
        lines.append(Line("grow_eval", init, 2 * check, (parent + grown) / 3.0 * check))
    for init, run in sorted({grid.init_dir(r): r for r in grid.of_kind(EXPANDED)}.items()):
        parent = flops_per_token(model_config(cfg, shape_name(run.model), run.moe), t["seq_len"], conv)
        recipe = expansion_recipe(cfg, run.expansion)
        utility = recipe.utility_batches * recipe.utility_batch_size * t["seq_len"]
        utility = utility if recipe.selection == "utility" else 0  # forward and backward: the training FLOPs
        lines.append(
            Line("expand_eval", init, 2 * check + utility, (parent + fpt(run)) / 3.0 * check + parent * utility)
        )
    return lines


@dataclass(frozen=True)
class Summary:
    rows: list[tuple[str, int, int, float]]  # kind, jobs, tokens, FLOPs
    total_flops: float
    largest: Line
    independent_flops: float  # the training FLOPs if every run trained on its own (no shared wsd phase)


def summarize(cfg: dict[str, Any]) -> Summary:
    lines = ledger_lines(cfg)
    by_kind: dict[str, list[Line]] = {}
    for line in lines:
        by_kind.setdefault(line.kind, []).append(line)
    rows = [
        (kind, len(by_kind[kind]), sum(x.tokens for x in by_kind[kind]), sum(x.flops for x in by_kind[kind]))
        for kind in KIND_ORDER
        if kind in by_kind
    ]
    t = cfg["train"]
    grid = Grid(cfg)
    fpt = {r: flops_per_token(grid.trained_model(r), t["seq_len"], t["flops_convention"]) for r in grid.runs}
    independent = sum(fpt[r] * grid.steps(r) * grid.tokens_per_step for r in grid.runs)
    training = [x for x in lines if x.kind not in CHECKS]
    return Summary(rows, sum(x.flops for x in lines), max(training, key=lambda x: x.flops), independent)


def gpu_hours(flops: float, mfu: float, gpu_tflops: float) -> float:
    return flops / (mfu * gpu_tflops * 1e12) / 3600.0


def walltime_lines(cfg: dict[str, Any]) -> list[str]:
    """What the walltime parts do to the DAG (stages.workflow.walltime): how many training jobs are cut, into how
    many, and the longest job's estimated hours against its rule's time limit."""
    grid = Grid(cfg)
    chains = list(grid.chains.values())
    cut = [c for c in chains if c.cuts]
    site = site_settings(cfg)
    basis = (
        f"{site.tokens_per_second:g} tokens/s per job (site.tokens_per_second)"
        if site.tokens_per_second
        else f"MFU {site.mfu:g} of {site.gpu_tflops:g} TFLOP/s per GPU (site.mfu, site.gpu_tflops)"
    )
    out = [
        f"walltime: {len(cut)} of {len(chains)} training jobs exceed their rule's time limit at {basis} and "
        f"train as {sum(len(c.cuts) + 1 for c in cut)} chained parts"
    ]
    longest: tuple[float, str, int] | None = None
    for chain in chains:
        rate = job_tokens_per_second(cfg, chain.rule, grid.trained_model(chain.run))
        if rate is None:
            continue
        steps = max(end - first for first, end in chain.pieces)
        hours = steps * grid.tokens_per_step / rate / 3600.0
        if longest is None or hours > longest[0]:
            longest = (hours, chain.job, rule_resources(cfg, chain.rule)["runtime"])
    if longest is not None:
        hours, job, limit = longest
        out.append(f"longest job: {job}, {hours:,.1f} hours estimated, time limit {limit / 60:,.1f} hours")
    for chain in cut:
        out.append(f"  {chain.job}: steps {chain.start}..{chain.end} in {len(chain.cuts) + 1} jobs, cut at "
                   f"{', '.join(map(str, chain.cuts))}")  # fmt: skip
    return out


def format_ledger(cfg: dict[str, Any], mfu: float | None = None, gpu_tflops: float | None = None) -> str:
    """The ledger as a table: jobs, tokens, FLOPs and GPU-hours per kind, the total and the largest job, then the
    walltime parts. ``mfu`` and ``gpu_tflops`` default to the config's site.mfu and site.gpu_tflops."""
    site = site_settings(cfg)
    mfu = site.mfu if mfu is None else mfu
    gpu_tflops = site.gpu_tflops if gpu_tflops is None else gpu_tflops
    s = summarize(cfg)
    conv = cfg["train"]["flops_convention"]
    head = f"{'kind':<14}{'jobs':>6}{'tokens':>12}{'FLOPs':>12}{'GPU-hours':>12}{'share':>8}"
    out = [
        f"compute ledger: {conv} FLOPs per token (stages/model/compute.py), GPU-hours at MFU {mfu:g} of "
        f"{gpu_tflops:g} TFLOP/s ({mfu * gpu_tflops:.1f} TFLOP/s achieved per GPU)",
        head,
        "-" * len(head),
    ]
    for kind, jobs, tokens, flops in s.rows:
        out.append(
            f"{kind:<14}{jobs:>6}{tokens:>12.3g}{flops:>12.3e}{gpu_hours(flops, mfu, gpu_tflops):>12,.1f}"
            f"{flops / s.total_flops:>8.1%}"
        )
    out.append("-" * len(head))
    jobs = sum(r[1] for r in s.rows)
    tokens = sum(r[2] for r in s.rows)
    out.append(
        f"{'total':<14}{jobs:>6}{tokens:>12.3g}{s.total_flops:>12.3e}"
        f"{gpu_hours(s.total_flops, mfu, gpu_tflops):>12,.1f}{1:>8.0%}"
    )
    big = s.largest
    out.append(
        f"largest training job: {big.job} ({big.flops:.3e} FLOPs, "
        f"{gpu_hours(big.flops, mfu, gpu_tflops):,.1f} GPU-hours on one GPU)"
    )
    trained = sum(r[3] for r in s.rows if r[0] not in CHECKS)
    if trained < s.independent_flops:
        out.append(
            f"training with shared wsd stable runs: {trained:.3e} FLOPs vs {s.independent_flops:.3e} for "
            f"independent runs ({trained / s.independent_flops:.3f})"
        )
    out += walltime_lines(cfg)
    return "\n".join(out)
