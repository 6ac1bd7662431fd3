"""The study's grid: which runs exist, where they live, and the seeds and arguments they get.

Paths follow DESIGN section 3; the prefix of a path names its upstream run, so one dense checkpoint
feeds every upcycled and continued run built on it with no extra code. Seeds derive from a run's
identity without its token budgets, so runs that differ only in D share initialisation and data order
(common random numbers: smoother curves for the same compute). Torch-free: the Snakefile uses it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from typing import Any

from stages.core.cli import parse_tokens
from stages.model.compute import param_counts
from stages.workflow.config import model_config

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
        """The JSON model spec for ``stages.train --model`` (vocab and context filled in by the stage)."""
        spec = model_config(self.cfg, model, moe).to_dict()
        for key in ("vocab_size", "max_seq_len"):
            spec.pop(key)
        return json.dumps(spec, sort_keys=True, separators=(",", ":"))

    def train_args(self, lr_policy: str = "cosine") -> str:
        """Command-line flags shared by every training job (a Snakemake param: a change reruns training)."""
        t = self.cfg["train"]
        flags = {
            "--seq-len": t["seq_len"], "--batch-size": t["batch_size"], "--lr": t["lr"],
            "--min-lr-ratio": t["min_lr_ratio"], "--warmup-frac": t["warmup_frac"],
            "--weight-decay": t["weight_decay"], "--beta1": t["beta1"], "--beta2": t["beta2"],
            "--adam-eps": t["adam_eps"], "--grad-clip": t["grad_clip"], "--flops-convention": t["flops_convention"],
            "--device": t["device"], "--dtype": t["dtype"], "--lr-policy": lr_policy,
        }
        return " ".join(f"{k} {shlex.quote(str(v))}" for k, v in flags.items())

    def runtime_args(self) -> str:
        """Flags that do not change results (threads, logging, progress checkpoints): not rerun triggers."""
        t = self.cfg["train"]
        return f"--threads {t['threads']} --log-every {t['log_every']} --save-every {t['save_every']}"

    def upcycle_args(self, moe: str) -> str:
        """Flags of ``stages.upcycle`` for MoE variant ``moe``."""
        m = self.cfg["moe"][moe]
        layers = m["layers"] if isinstance(m["layers"], str) else ",".join(str(i) for i in m["layers"])
        flags = [
            f"--experts {m['experts']}", f"--top-k {m['top_k']}", f"--granularity {m['granularity']}",
            f"--moe-layers {shlex.quote(layers)}", f"--shared-expert-d-ff {m['shared_expert_d_ff']}",
            f"--aux-loss-coef {m['aux_loss_coef']}", f"--z-loss-coef {m['z_loss_coef']}",
            f"--capacity-factor {m['capacity_factor']}", f"--method {m['method']}",
            f"--router-init {m['router_init']}", f"--router-std {m['router_std']}",
            f"--scale-spread {m['scale_spread']}", f"--noise-std {m['noise_std']}", f"--drop-ratio {m['drop_ratio']}",
        ]
        if m["norm_topk_prob"]:
            flags.append("--norm-topk-prob")
        if m["drop_per_matrix_indices"]:
            flags.append("--drop-per-matrix-indices")
        return " ".join(flags)

    def labels_json(self, run: Run) -> str:
        return json.dumps(run.labels(), sort_keys=True, separators=(",", ":"))

    def planner_args(self) -> str:
        """Flags of ``stages.planner`` for the example decision in ``config["planner"]``."""
        p = self.cfg["planner"]
        n1 = param_counts(model_config(self.cfg, p["model"])).total()
        n_active = param_counts(model_config(self.cfg, p["model"], p["moe"])).active()
        flags = [f"--n1 {n1}", f"--n-active {n_active}", f"--d1 {parse_tokens(p['d1'])}",
                 f"--extra-tokens {parse_tokens(p['extra_tokens'])}", f"--upcycled-fit {p['upcycled_fit']}",
                 f"--scratch-fit {p['scratch_fit']}", f"--dense-fit {p['dense_fit']}",
                 f"--max-extrapolation {p['max_extrapolation']}"]
        if p["total_flops"]:
            flags.append(f"--total-flops {p['total_flops']}")
        return " ".join(flags)
