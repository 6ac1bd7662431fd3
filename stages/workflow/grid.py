"""The study's grid: which runs exist, where they live, and the seeds and arguments they get.

The prefix of a path names its upstream run, so one dense checkpoint
feeds every upcycled and continued run built on it with no extra code. Seeds derive from a run's
identity without its token budgets, so runs that differ only in D share initialisation and data order
(common random numbers: smoother curves for the same compute). Torch-free: the Snakefile uses it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from stages.core.cli import parse_tokens
from stages.core.options import from_mapping, pick, to_json
from stages.model.compute import param_counts
from stages.training.options import TrainConfig
from stages.training.schedule import decay_steps, warmup_steps
from stages.workflow.config import model_config, moe_config, upcycle_recipe

RESULTS = "results"


def study_root(study: str) -> str:
    """Where every output of a study lives: results/<study>, or results/ itself for the unnamed study ("")."""
    return f"{RESULTS}/{study}" if study else RESULTS


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from a run's identity (base seed, kind, model, moe, ...)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@dataclass(frozen=True, order=True)
class Run:
    """One trained model of the grid; ``run_id`` is its path under results/."""

    kind: str  # dense | upcycled | scratch_moe | dense_cont
    model: str
    moe: str = ""
    d1: str = ""
    d2: str = ""
    d: str = ""
    root: str = field(default=RESULTS, compare=False, repr=False)  # the study root (study_root)

    @property
    def run_id(self) -> str:
        if self.kind == "dense":
            return f"dense/{self.model}/d1_{self.d1}"
        if self.kind == "upcycled":
            return f"moe/{self.model}/d1_{self.d1}/{self.moe}/d2_{self.d2}"
        if self.kind == "scratch_moe":
            return f"scratch/{self.model}/{self.moe}/d_{self.d}"
        return f"dense_cont/{self.model}/d1_{self.d1}/d2_{self.d2}"

    @property
    def directory(self) -> str:
        return f"{self.root}/{self.run_id}"

    @property
    def eval_json(self) -> str:
        return f"{self.root}/eval/{self.run_id}/eval.json"

    def labels(self) -> dict[str, str]:
        fields = {"kind": self.kind, "model": self.model, "moe": self.moe, "D1": self.d1, "D2": self.d2, "D": self.d}
        return {k: v for k, v in fields.items() if v}

    @property
    def budget(self) -> str:
        """The token budget this run trains for (D1 of a dense run, D2 of a continuation, D from scratch)."""
        return {"dense": self.d1, "scratch_moe": self.d}.get(self.kind, self.d2)

    @property
    def family(self) -> str:
        """The runs that differ only in their budget: under wsd they share one stable run."""
        return self.run_id.rsplit("/", 1)[0]


@dataclass(frozen=True, order=True)
class Segment:
    """A stable-phase job of a wsd family: trains from ``previous`` to ``step`` and saves a branch state there."""

    family: str
    step: int  # the decay start of ``run``: where its cooldown branches off
    previous: int  # the step it starts from (0: from the initial model)
    run: Run  # the budget whose cooldown starts at ``step``; the segment trains with its options

    @property
    def state(self) -> str:
        return branch_state(self.family, self.step, self.run.root)


def branch_state(family: str, step: int, root: str = RESULTS) -> str:
    return f"{root}/stable/{family}/b_{step}.pt"


class Grid:
    """The runs a validated config asks for, plus the dense parents they need."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        study = cfg.get("study", "")
        self.root = study_root(study)  # every output path below starts here
        self.logs = f"{self.root}/logs" if study else "logs"
        self.benchmarks = f"{self.root}/benchmarks" if study else "benchmarks"
        g = cfg["grid"]
        new = self.run  # every run of this grid carries the study root
        runs: set[Run] = set()
        runs.update(new("dense", m, d1=str(d1)) for m in g["dense"]["models"] for d1 in g["dense"]["d1"])
        if g.get("upcycled"):
            u = g["upcycled"]
            for m in u["models"]:
                for e in u["moe"]:
                    for d1 in u["d1"]:
                        runs.add(new("dense", m, d1=str(d1)))
                        runs.update(new("upcycled", m, e, d1=str(d1), d2=str(d2)) for d2 in u["d2"])
        if g.get("scratch_moe"):
            s = g["scratch_moe"]
            runs.update(new("scratch_moe", m, e, d=str(d)) for m in s["models"] for e in s["moe"] for d in s["d"])
        if g.get("dense_cont"):
            c = g["dense_cont"]
            for m in c["models"]:
                for d1 in c["d1"]:
                    runs.add(new("dense", m, d1=str(d1)))
                    runs.update(new("dense_cont", m, d1=str(d1), d2=str(d2)) for d2 in c["d2"])
        self.runs = sorted(runs)
        self.segments = self._segments()

    def run(self, kind: str, model: str, moe: str = "", d1: str = "", d2: str = "", d: str = "") -> Run:
        """A run of this study (its paths under the study root)."""
        return Run(kind, model, moe, d1=d1, d2=d2, d=d, root=self.root)

    def branch_state(self, family: str, step: str | int) -> str:
        return branch_state(family, int(step), self.root)

    # ----- wsd: one stable run per family, a cooldown per budget -----

    def lr_policy(self, run: Run) -> str:
        t = self.cfg["train"]
        if run.kind == "upcycled":
            return self.cfg["moe"][run.moe]["lr_policy"]
        return t["dense_cont_lr_policy"] if run.kind == "dense_cont" else t["lr_policy"]

    @property
    def tokens_per_step(self) -> int:
        return self.cfg["train"]["batch_size"] * self.cfg["train"]["seq_len"]

    def steps(self, run: Run) -> int:
        """Optimizer steps of ``run``'s whole budget (what the trainer runs for ``--tokens``)."""
        return parse_tokens(run.budget) // self.tokens_per_step

    def branch_step(self, run: Run) -> int:
        """Where ``run``'s cooldown branches off its family's stable run (0: an independent run)."""
        if self.lr_policy(run) != "wsd":
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

    def start_state(self, run: Run) -> list[str]:
        """The branch state ``run`` cools down from, as a rule input ([] for an independent run)."""
        step = self.branch_step(run)
        return [self.branch_state(run.family, step)] if step > 0 else []

    def segment(self, family: str, step: str | int) -> Segment:
        return self.segments[(family, int(step))]

    def init_dir(self, run: Run) -> str:
        """The checkpoint a continuation starts from ('' for a fresh model)."""
        if run.kind == "upcycled":
            return f"{self.root}/upcycled/{run.model}/d1_{run.d1}/{run.moe}"
        return self.run("dense", run.model, d1=run.d1).directory if run.kind == "dense_cont" else ""

    def segment_args(self, family: str, step: str | int) -> str:
        """Arguments of ``stages.train`` for one stable segment (everything but threads and output)."""
        seg = self.segment(family, step)
        run = seg.run
        start = (
            f"--init {self.init_dir(run)}"
            if self.init_dir(run)
            else f"--model {shlex.quote(self.model_json(run.model, run.moe or None))}"
        )
        args = [
            f"--kind {run.kind}",
            f"--run-id stable/{family}/b_{seg.step}",
            f"--data {self.corpus_dir}",
            f"--tokens {run.budget}",
            start,
            f"--train {shlex.quote(self.train_json(self.lr_policy(run)))}",
            f"--labels {shlex.quote(self.labels_json(run))}",
            f"--seed {self.seed(run.kind, run.model, run.moe)}",
            f"--data-seed {self.data_seed()}",
            f"--stop-step {seg.step}",
        ]
        if seg.previous:
            args.append(f"--start-state {self.branch_state(family, seg.previous)}")
        return " ".join(args)

    def trained_steps(self) -> tuple[int, int]:
        """Optimizer steps of every training job of the grid, and what independent runs would take."""
        independent = sum(self.steps(r) for r in self.runs)
        branched = sum(s.step - s.previous for s in self.segments.values())
        branched += sum(self.steps(r) - self.branch_step(r) for r in self.runs)
        return branched, independent

    def of_kind(self, kind: str) -> list[Run]:
        return [r for r in self.runs if r.kind == kind]

    def upcycle_inits(self) -> list[str]:
        """Directories of the upcycled MoE initialisations (one per model, D1 and MoE variant)."""
        return sorted({f"{self.root}/upcycled/{r.model}/d1_{r.d1}/{r.moe}" for r in self.of_kind("upcycled")})

    # ----- seeds and arguments the rules pass to the stages -----

    @property
    def corpus_dir(self) -> str:
        return f"{self.root}/data/{self.cfg['data']['corpus']}"

    def data_seed(self) -> int:
        return derive_seed(self.cfg["seed"], "data", self.cfg["data"]["corpus"])

    def seed(self, kind: str, model: str, moe: str = "") -> int:
        return derive_seed(self.cfg["seed"], kind, model, moe)

    def model_json(self, model: str, moe: str | None = None) -> str:
        """The JSON model shape for ``stages.train --model`` (vocab and context filled in by the stage)."""
        spec = model_config(self.cfg, model, moe).to_dict()
        for key in ("vocab_size", "max_seq_len"):
            spec.pop(key)
        return json.dumps(spec, sort_keys=True, separators=(",", ":"))

    def train_json(self, lr_policy: str = "cosine") -> str:
        """The training option group every training job gets (a Snakemake param: a change reruns training)."""
        return to_json(
            from_mapping(TrainConfig, {**pick(TrainConfig, self.cfg["train"]), "lr_policy": lr_policy}, "train")
        )

    def moe_json(self, moe: str) -> str:
        """The routing group of MoE variant ``moe`` for ``stages.upcycle --moe``."""
        return to_json(moe_config(self.cfg, moe))

    def recipe_json(self, moe: str) -> str:
        """The upcycling recipe of MoE variant ``moe`` for ``stages.upcycle --recipe``."""
        return to_json(upcycle_recipe(self.cfg, moe))

    def labels_json(self, run: Run) -> str:
        return json.dumps(run.labels(), sort_keys=True, separators=(",", ":"))

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
        return " ".join(flags)
