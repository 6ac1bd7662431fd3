"""The study's grid: which runs exist, where they live, and the seeds and arguments they get.

The prefix of a path names its upstream run, so one dense checkpoint
feeds every upcycled and continued run built on it with no extra code. Seeds derive from a run's
identity without its token budgets, so runs that differ only in D share initialisation and data order
(common random numbers: smoother curves for the same compute). Torch-free: the Snakefile uses it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shlex
from typing import Any

from stages.core import kinds
from stages.core.cli import UserError, parse_tokens
from stages.core.options import from_mapping, pick, to_json
from stages.laws.roles import DEFAULT_FITS, DENSE, SCRATCH, UPCYCLE
from stages.model.compute import param_counts
from stages.model.config import ModelConfig
from stages.training.options import TrainConfig
from stages.training.schedule import decay_steps, warmup_steps
from stages.workflow.config import (
    expanded_moe_config,
    expansion_recipe,
    grid_blocks,
    growth_recipe,
    growth_target,
    lr_policy,
    model_config,
    moe_config,
    upcycle_recipe,
)
from stages.workflow.runs import (
    REPLICA,
    Run,
    Segment,
    branch_state,
    derive_seed,
    lr_label,
    replica_index,
    shape_name,
    study_root,
)
from stages.workflow.walltime import Chain, cut_points, segment_job, steps_per_job


class Grid:
    """The runs a validated config asks for, plus the dense parents they need."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        study = cfg.get("study", "")
        self.root = study_root(study)  # every output path below starts here
        self.logs = f"{self.root}/logs" if study else "logs"
        self.benchmarks = f"{self.root}/benchmarks" if study else "benchmarks"
        runs: set[Run] = set()
        for kind in kinds.KINDS.values():
            for block in grid_blocks(cfg, kind.name):
                for model in block["models"]:
                    runs.update(self._cells(kind, model, block))
        runs.update(self._replicas(cfg["grid"].get("replicas"), runs))
        # an imported parent's dense checkpoint is imported (rule import_parent), not trained nor evaluated
        self.runs = sorted(r for r in runs if not (r.kind == kinds.DENSE and self.is_parent(r.model)))
        self.segments = self._segments()
        self.chains = self._chains()  # every training job, in walltime parts where it must be

    def _cells(self, kind: kinds.RunKind, model: str, block: dict[str, Any]) -> list[Run]:
        """The runs of ``model`` in one block of grid section ``kind`` (its axes crossed), and the dense runs at
        D1 that a continued kind starts from."""
        values = []
        for axis in kind.axes:
            if axis == "d1" and kind.continues:
                values.append(self._d1s(model, block))
            elif axis == "lr":
                values.append([lr_label(lr) for lr in block["lr"]])
            else:
                values.append([str(v) for v in block[axis]])
        runs = []
        for cell in itertools.product(*values):
            run = self.run(kind.name, model, **dict(zip(kind.axes, cell, strict=True)))
            runs.append(run)
            if kind.continues:
                runs.append(self.parent_run(run))
        return runs

    def _replicas(self, spec: dict[str, Any] | None, runs: set[Run]) -> set[Run]:
        """Each listed run trained again with seeds 2..n, its whole lineage (dense parent, surgery) included."""
        if not spec:
            return set()
        by_id = {r.run_id: r for r in runs}
        wanted = spec["runs"]
        if wanted == "all":  # a seed-replicated study; sweeps pick an lr, they measure no seed noise
            wanted = sorted(r.run_id for r in runs if r.kind != kinds.LR_SWEEP)
        replicas: set[Run] = set()
        for run_id in wanted:
            if run_id not in by_id:
                raise UserError(f"config key 'grid.replicas.runs': {run_id!r} is not a run of the grid")
            for k in range(2, spec.get("seeds", 2) + 1):
                replica = dataclasses.replace(by_id[run_id], model=f"{by_id[run_id].model}{REPLICA}{k}")
                replicas.add(replica)
                if replica.spec.continues:  # its whole lineage: the parent too
                    replicas.add(self.parent_run(replica))
        return replicas

    # ----- imported parents: existing dense models the grid upcycles or continues -----

    def is_parent(self, model: str) -> bool:
        """Whether grid model ``model`` (or the shape a replica label trains) is an imported parent."""
        return shape_name(model) in self.cfg.get("parents", {})

    def _d1s(self, model: str, block: dict[str, Any]) -> list[str]:
        """The D1 budgets of ``model`` in a continued block: an imported parent's stated tokens, else ``d1``."""
        if self.is_parent(model):
            return [str(self.cfg["parents"][shape_name(model)]["tokens"])]
        return [str(d1) for d1 in block["d1"]]

    def parent_pattern(self) -> str:
        """A regex of the parents' model labels (replicas included) for the import rule; one that matches nothing
        when there are none."""
        names = "|".join(re.escape(name) for name in sorted(self.cfg.get("parents", {})))
        return f"({names})({re.escape(REPLICA)}[0-9]+)?" if names else "(?!)"

    def import_args(self, model: str) -> str:
        """Arguments of ``stages.export --from hf`` that import parent ``model`` as its dense checkpoint, at the
        study's context length, with its stated pre-training counted in the study's FLOP convention."""
        parent = self.cfg["parents"][shape_name(model)]
        run = self.run(kinds.DENSE, model, d1=str(parent["tokens"]))
        t = self.cfg["train"]
        args = [
            f"--checkpoint {shlex.quote(parent['hf'])} --from hf",
            f"--max-seq-len {t['seq_len']}",
            f"--tokens {parent['tokens']}",
            f"--flops-convention {t['flops_convention']}",
            f"--run-id {run.run_id}",
            f"--out {run.directory}",
        ]
        return " ".join(args)

    def run(self, kind: str, model: str, moe: str = "", **fields: str) -> Run:
        """A run of this study (its paths under the study root); ``fields``: d1, d2, d, lr, growth, expansion."""
        return Run(kind, model, moe, root=self.root, **fields)

    def parent_run(self, run: Run) -> Run:
        """The trained run a continued run starts from: its kind's ``continues`` at this d1 (and this MoE variant)."""
        parent = kinds.KINDS[run.spec.continues]
        fields = {parent.budget: run.d1}
        if parent.variant:
            fields[parent.variant] = getattr(run, parent.variant)
        return self.run(parent.name, run.model, **fields)

    def branch_state(self, family: str, step: str | int) -> str:
        return branch_state(family, int(step), self.root)

    # ----- wsd: one stable run per family, a cooldown per budget -----

    def lr_policy(self, run: Run) -> str:
        """The lr policy ``run`` trains with (stages.workflow.config.lr_policy: its kind says where it is set)."""
        return lr_policy(self.cfg, run.kind, run.variant)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg["train"]["batch_size"] * self.cfg["train"]["seq_len"]

    def steps(self, run: Run) -> int:
        """Optimizer steps of ``run``'s whole budget (what the trainer runs for ``--tokens``)."""
        return parse_tokens(run.budget) // self.tokens_per_step

    def branch_step(self, run: Run) -> int:
        """Where ``run``'s cooldown branches off its family's stable run (0: an independent run). An lr_sweep run
        is always independent: each learning rate is a family of its own, with (usually) one budget. So is every
        run of the nanotron backend, which has no branch states (stages.training.nanotron_backend)."""
        if self.lr_policy(run) != "wsd" or not run.spec.branches or self.cfg["train"]["backend"] == "nanotron":
            return 0
        t = self.cfg["train"]
        total = self.steps(run)
        warmup = warmup_steps(total, t["warmup_frac"], fixed=t["warmup_steps"])
        return total - decay_steps(total, warmup, t["decay_frac"])

    def _segments(self) -> dict[tuple[str, int], Segment]:
        by_family: dict[str, dict[int, Run]] = {}
        for run in self.runs:
            step = self.branch_step(run)
            if step > 0:
                by_family.setdefault(run.family, {}).setdefault(step, run)
        segments = {}
        for family, runs in by_family.items():
            previous = 0
            for step in sorted(runs):
                segments[(family, step)] = Segment(family, step, previous, runs[step])
                previous = step
        return segments

    def _chains(self) -> dict[str, Chain]:
        """Every training job by id, cut into parts where its estimated time exceeds its rule's limit
        (stages.workflow.walltime); both backends train a job in parts."""
        jobs = [
            Chain(segment_job(s.family, s.step), "stable", s.run, s.previous, s.step,
                  self.branch_state(s.family, s.previous) if s.previous else "")
            for s in self.segments.values()
        ]  # fmt: skip
        for r in self.runs:
            step = self.branch_step(r)
            start = self.branch_state(r.family, step) if step else ""
            jobs.append(Chain(r.run_id, r.spec.folder, r, step, self.steps(r), start))
        chains = {}
        limits: dict[tuple[str, ...], int | None] = {}  # per rule and trained shape: the estimate reads the config
        for chain in jobs:
            r = chain.run
            key = (chain.rule, shape_name(r.model), r.moe, r.growth, r.expansion)
            if key not in limits:
                limits[key] = steps_per_job(self.cfg, chain.rule, self.trained_model(r))
            chains[chain.job] = dataclasses.replace(chain, cuts=tuple(cut_points(chain.start, chain.end, limits[key])))
        return chains

    def start_state(self, run: Run) -> list[str]:
        """The branch state ``run`` cools down from, or its last walltime part: a rule input ([]: none)."""
        return self.chains[run.run_id].final_inputs

    def segment(self, family: str, step: str | int) -> Segment:
        return self.segments[(family, int(step))]

    def init_id(self, run: Run) -> str:
        """The checkpoint a continuation starts from, under the study root: its dense parent's run_id, or where
        its surgery writes (upcycled/..., grow/...); '' for a fresh model."""
        return run.spec.init.format(**run.fields())

    def init_dir(self, run: Run) -> str:
        """The directory of :meth:`init_id` ('' for a fresh model)."""
        init = self.init_id(run)
        return f"{self.root}/{init}" if init else ""

    def parent_dir(self, run: Run) -> str:
        """The trained checkpoint a continued run's lineage starts from (its parent at D1), before surgery."""
        return self.parent_run(run).directory

    # ----- the arguments of a training job: one builder for every training rule -----

    def _job_args(self, run: Run, run_id: str) -> list[str]:
        """What ``stages.train`` needs to train ``run``: its identity, data, starting model, option groups, labels
        and seeds (a stable segment of a wsd family adds where it stops and starts)."""
        init = self.init_dir(run)
        start = f"--init {init}" if init else f"--model {shlex.quote(self.model_json(run.model, run.moe or None))}"
        return [
            f"--kind {run.kind}",
            f"--run-id {run_id}",
            f"--data {self.corpus_dir}",
            f"--tokens {run.budget}",
            start,
            f"--train {shlex.quote(self.run_train_json(run))}",
            f"--labels {shlex.quote(self.labels_json(run))}",
            f"--seed {self.run_seed(run)}",
            f"--data-seed {self.data_seed(run.model)}",
        ]

    def train_args(self, run: Run) -> str:
        """Arguments of ``stages.train`` for ``run`` (all but threads and save_every): its training rule's one
        param, so that every value that changes the result is a rerun trigger."""
        args = self._job_args(run, run.run_id)
        args += [f"--start-state {state}" for state in self.start_state(run)]
        args.append(f"--out {run.directory}")
        return " ".join(args)

    def segment_args(self, family: str, step: str | int) -> str:
        """Arguments of ``stages.train`` for one stable segment (everything but threads and output)."""
        seg = self.segment(family, step)
        args = self._job_args(seg.run, segment_job(family, seg.step))
        args.append(f"--stop-step {seg.step}")
        args += [f"--start-state {state}" for state in self.chains[segment_job(family, seg.step)].final_inputs]
        return " ".join(args)

    def part_args(self, job: str, step: str | int) -> str:
        """Arguments of ``stages.train`` for the walltime part of ``job`` that ends at ``step`` (all but threads
        and its output): the job's own, stopped there, continuing the part before it."""
        chain = self.chains[job]
        args = self._job_args(chain.run, f"parts/{job}/p_{step}")
        args += [f"--start-state {state}" for state in chain.part_inputs(int(step))]
        args.append(f"--stop-step {step} --part")
        return " ".join(args)

    def trained_steps(self) -> tuple[int, int]:
        """Optimizer steps of every training job of the grid, and what independent runs would take."""
        return sum(c.end - c.start for c in self.chains.values()), sum(self.steps(r) for r in self.runs)

    def of_kind(self, kind: str) -> list[Run]:
        return [r for r in self.runs if r.kind == kind]

    def surgery_inits(self, surgery: str) -> list[str]:
        """Directories that surgery ``surgery`` (core.kinds: upcycle, grow) writes for the grid's runs."""
        return sorted({self.init_dir(r) for r in self.runs if r.spec.surgery == surgery})

    def upcycle_inits(self) -> list[str]:
        """Directories of the upcycled MoE initialisations (one per model, D1 and MoE variant)."""
        return self.surgery_inits(kinds.UPCYCLE)

    def grow_inits(self) -> list[str]:
        """Directories of the grown dense initialisations (one per model, D1 and growth variant)."""
        return self.surgery_inits(kinds.GROW)

    def expand_inits(self) -> list[str]:
        """Directories of the expanded MoE initialisations (one per model, MoE, D1 and expansion variant)."""
        return self.surgery_inits(kinds.EXPAND)

    def trained_model(self, run: Run) -> ModelConfig:
        """The model ``run`` trains: its grid model and MoE variant, a growth target, or an expanded MoE."""
        if run.growth:
            return model_config(self.cfg, growth_target(self.cfg, run.growth))
        if run.expansion:
            moe = expanded_moe_config(self.cfg, run.moe, run.expansion)
            return dataclasses.replace(model_config(self.cfg, shape_name(run.model)), moe=moe)
        return model_config(self.cfg, shape_name(run.model), run.moe or None)

    # ----- seeds and arguments the rules pass to the stages -----

    @property
    def corpus_dir(self) -> str:
        return f"{self.root}/data/{self.cfg['data']['corpus']}"

    def data_seed(self, model: str = "") -> int:
        """The data order: shared by every run of the grid (common random numbers), except replicas."""
        replica = replica_index(model)
        extra = (replica,) if replica > 1 else ()
        return derive_seed(self.cfg["seed"], "data", self.cfg["data"]["corpus"], *extra)

    def seed(self, kind: str, model: str, moe: str = "") -> int:
        return derive_seed(self.cfg["seed"], kind, model, moe)

    def run_seed(self, run: Run) -> int:
        """The initialisation seed of ``run``: from its identity without its budgets, or (an lr sweep) its shape."""
        return self.sweep_seed(run.model) if run.spec.shape_seed else self.seed(run.kind, run.model, run.identity)

    def model_json(self, model: str, moe: str | None = None) -> str:
        """The JSON model shape for ``stages.train --model`` (vocab and context filled in by the stage)."""
        spec = model_config(self.cfg, shape_name(model), moe).to_dict()
        for key in ("vocab_size", "max_seq_len"):
            spec.pop(key)
        return json.dumps(spec, sort_keys=True, separators=(",", ":"))

    def train_json(self, lr_policy: str = "cosine", lr: float | None = None) -> str:
        """The training option group every training job gets (a Snakemake param: a change reruns training);
        ``lr`` overrides the peak learning rate (an lr_sweep run)."""
        options = {**pick(TrainConfig, self.cfg["train"]), "lr_policy": lr_policy}
        if lr is not None:
            options["lr"] = lr
        return to_json(from_mapping(TrainConfig, options, "train"))

    def run_train_json(self, run: Run) -> str:
        """The training options of ``run``: the study's, with its lr policy (and an lr_sweep run's peak lr)."""
        return self.train_json(self.lr_policy(run), float(run.lr) if run.lr else None)

    def sweep_seed(self, model: str) -> int:
        """The initialisation seed of an lr_sweep model: from its shape without its parametrization, and neither
        its learning rate nor its budget. Every lr of a width starts from the same draws (common random numbers:
        the loss-vs-lr curve is not blurred by seed noise); the sp and mup entries of one width draw the same
        numbers too (muP only rescales them), so at the base width, where muP is SP bit for bit, both runs are
        the same bits."""
        spec = json.loads(self.model_json(model))
        for key in ("parametrization", "mup_base_d_model", "mup_base_head_dim"):
            spec.pop(key, None)
        shape = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        return derive_seed(self.cfg["seed"], kinds.LR_SWEEP, shape, model.partition(REPLICA)[2])

    def moe_json(self, moe: str) -> str:
        """The routing group of MoE variant ``moe`` for ``stages.upcycle --moe``."""
        return to_json(moe_config(self.cfg, moe))

    def recipe_json(self, moe: str) -> str:
        """The upcycling recipe of MoE variant ``moe`` for ``stages.upcycle --recipe``."""
        return to_json(upcycle_recipe(self.cfg, moe))

    def growth_model_json(self, growth: str) -> str:
        """The full shape of growth variant ``growth``'s target model for ``stages.grow --model``."""
        spec = model_config(self.cfg, growth_target(self.cfg, growth)).to_dict()
        return json.dumps(spec, sort_keys=True, separators=(",", ":"))

    def growth_recipe_json(self, growth: str) -> str:
        """The growth recipe of variant ``growth`` for ``stages.grow --recipe``."""
        return to_json(growth_recipe(self.cfg, growth))

    def expansion_recipe_json(self, expansion: str) -> str:
        """The expansion recipe of variant ``expansion`` for ``stages.expand --recipe``."""
        return to_json(expansion_recipe(self.cfg, expansion))

    def labels_json(self, run: Run) -> str:
        return json.dumps(run.labels(), sort_keys=True, separators=(",", ":"))

    def findings_args(self) -> str:
        """Which fits ``stages.findings`` reads for the dense, upcycled and scratch laws (the planner's roles)."""
        p = self.cfg.get("planner") or {}
        names = {"dense": DEFAULT_FITS[DENSE], "upcycled": DEFAULT_FITS[UPCYCLE], "scratch": DEFAULT_FITS[SCRATCH]}
        names.update({role: p[f"{role}_fit"] for role in names if p.get(f"{role}_fit")})
        return " ".join(f"--{role}-fit {name}" for role, name in names.items())

    def planner_args(self) -> str:
        """Flags of ``stages.planner`` for the example decision in ``config["planner"]``."""
        p = self.cfg["planner"]
        n1 = param_counts(model_config(self.cfg, p["model"])).total()
        n_active = param_counts(model_config(self.cfg, p["model"], p["moe"])).active()
        flags = [
            f"--n1 {n1}",
            f"--n-active {n_active}",
            f"--d1 {parse_tokens(p['d1'])}",
            f"--extra-tokens {parse_tokens(p['extra_tokens'])}",
            f"--upcycled-fit {p['upcycled_fit']}",
            f"--scratch-fit {p['scratch_fit']}",
            f"--dense-fit {p['dense_fit']}",
            f"--max-extrapolation {p['max_extrapolation']}",
        ]
        if p["total_flops"]:
            flags.append(f"--total-flops {p['total_flops']}")
        if p["grown_fit"]:
            n_grown = param_counts(model_config(self.cfg, p["grown_model"])).total()
            flags.append(f"--grown-fit {p['grown_fit']} --n-grown {n_grown}")
        if p["expanded_fit"]:
            flags.append(f"--expanded-fit {p['expanded_fit']}")
        return " ".join(flags)
