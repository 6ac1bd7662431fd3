"""The study's grid: which runs exist, where they live, and the seeds and arguments they get.

The prefix of a path names its upstream run, so one dense checkpoint
feeds every upcycled and continued run built on it with no extra code. Seeds derive from a run's
identity without its token budgets, so runs that differ only in D share initialisation and data order
(common random numbers: smoother curves for the same compute). Torch-free: the Snakefile uses it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from stages.core.cli import parse_tokens
from stages.core.options import from_mapping, pick, to_json
from stages.model.compute import param_counts
from stages.training.options import TrainConfig
from stages.workflow.config import model_config, moe_config, upcycle_recipe

RESULTS = "results"


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
        return f"{RESULTS}/{self.run_id}"

    @property
    def eval_json(self) -> str:
        return f"{RESULTS}/eval/{self.run_id}/eval.json"

    def labels(self) -> dict[str, str]:
        fields = {"kind": self.kind, "model": self.model, "moe": self.moe, "D1": self.d1, "D2": self.d2, "D": self.d}
        return {k: v for k, v in fields.items() if v}


class Grid:
    """The runs a validated config asks for, plus the dense parents they need."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        g = cfg["grid"]
        runs: set[Run] = set()
        runs.update(Run("dense", m, d1=str(d1)) for m in g["dense"]["models"] for d1 in g["dense"]["d1"])
        if g.get("upcycled"):
            u = g["upcycled"]
            for m in u["models"]:
                for e in u["moe"]:
                    for d1 in u["d1"]:
                        runs.add(Run("dense", m, d1=str(d1)))
                        runs.update(Run("upcycled", m, e, d1=str(d1), d2=str(d2)) for d2 in u["d2"])
        if g.get("scratch_moe"):
            s = g["scratch_moe"]
            runs.update(Run("scratch_moe", m, e, d=str(d)) for m in s["models"] for e in s["moe"] for d in s["d"])
        if g.get("dense_cont"):
            c = g["dense_cont"]
            for m in c["models"]:
                for d1 in c["d1"]:
                    runs.add(Run("dense", m, d1=str(d1)))
                    runs.update(Run("dense_cont", m, d1=str(d1), d2=str(d2)) for d2 in c["d2"])
        self.runs = sorted(runs)

    def of_kind(self, kind: str) -> list[Run]:
        return [r for r in self.runs if r.kind == kind]

    def upcycle_inits(self) -> list[str]:
        """Directories of the upcycled MoE initialisations (one per model, D1 and MoE variant)."""
        return sorted({f"{RESULTS}/upcycled/{r.model}/d1_{r.d1}/{r.moe}" for r in self.of_kind("upcycled")})

    # ----- seeds and arguments the rules pass to the stages -----

    @property
    def corpus_dir(self) -> str:
        return f"{RESULTS}/data/{self.cfg['data']['corpus']}"

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
