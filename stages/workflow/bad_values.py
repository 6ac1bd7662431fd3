"""Bad values of every config option: the table the bad-input suite (tests/test_bad_inputs.py) runs.

Each case is a small change of a shipped config (``config/config.yaml``, or another study overlaid on it as
``--configfile`` would) that the workflow must refuse while the DAG is built, in one line naming the key (or the
file). The table sits here, next to the option groups and their validation (``sections``, ``config``, ``schema``),
rather than in the test or inside each ``option(...)``: the groups live in five packages that other work edits
concurrently, a bad value is often a relation between sections (warmup vs steps, a fit's columns vs its law)
that no single field could carry, and one table is easy to read as the list of what is refused. A meta-test
walks the config schema and fails for every option without a case here, so a new option comes with its bad
values. ``key`` is the option as the schema spells it (``*`` for a user-chosen name: ``models.*.n_layer``).
Torch-free data; nothing in the workflow imports it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.kinds import KINDS, LR_SWEEP, UPCYCLED
from stages.laws.roles import DEFAULT_FITS, UPCYCLE

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
DELETE = object()  # a change that removes the key


@dataclass(frozen=True)
class BadConfig:
    """One bad config: ``changes`` (dotted paths, list indices as numbers) applied to shipped config ``base``."""

    key: str  # the option it exercises, as the schema names it
    changes: Mapping[str, Any]
    names: str  # what the one-line error must contain: the key it names (or the file)
    base: str = "config.yaml"  # overlaid on config.yaml like --configfile (lists replace, mappings merge)
    dag: bool = False  # also run through a real `snakemake -n` (a handful: the Snakefile's own path)
    extra: Mapping[str, Any] = field(default_factory=dict)  # companion changes that make the bad value reachable

    @property
    def id(self) -> str:
        value = next(iter(self.changes.values()))
        return f"{self.base.removesuffix('.yaml')}:{next(iter(self.changes))}={value!r}"[:90]


def base_config(name: str) -> dict[str, Any]:
    """Shipped config ``name`` as the workflow reads it: config.yaml, with ``name`` overlaid."""
    from stages.workflow.accounting import merge
    from stages.workflow.config import load_yaml

    cfg = load_yaml(CONFIG_DIR / "config.yaml")
    return cfg if name == "config.yaml" else merge(cfg, load_yaml(CONFIG_DIR / name))


def apply(cfg: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with each dotted path set to its value (a missing mapping on the way is created)."""
    out = copy.deepcopy(cfg)
    for path, value in changes.items():
        node: Any = out
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        elif value is DELETE:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return out


def bad_config(case: BadConfig) -> dict[str, Any]:
    return apply(apply(base_config(case.base), case.extra), case.changes)


def _k(key: str, changes: dict[str, Any], names: str | None = None, **kw: Any) -> BadConfig:
    """A case whose error names the path of its first change up to a list index (or ``names``): a grid block's
    errors name its section (``grid.upcycled.d1``) or, from the schema, its block and item (``grid.upcycled.0.d1.0``).
    """
    parts = next(iter(changes)).split(".")
    cut = next((i for i, part in enumerate(parts) if part.isdigit()), len(parts))
    return BadConfig(key, changes, names or f"config key '{'.'.join(parts[:cut])}", **kw)


UPCYCLED_FIT = DEFAULT_FITS[UPCYCLE]  # the default config's fit of the upcycled law
NOT_A_RUN = {"model": "zz", "moe": "e8k2", "d1": "1M", "d2": "1M"}  # a run of a model the grid does not have
WS, EX, MUP = "warmstart.yaml", "expert_upcycling.yaml", "mup.yaml"
UP = "fits.upcycled"
CH = "fits.dense_chinchilla"
NO_REPLICAS = {"grid.replicas": None}  # a case whose change would drop a replicated run
NEW_MOE = {"experts": 4, "top_k": 2, "granularity": 5}  # a variant no grid block uses (d_ff 256 % 5 != 0)

CASES: tuple[BadConfig, ...] = (
    # ----- top level -----
    _k("study", {"study": "eval"}),
    _k("study", {"study": "my study"}),
    _k("seed", {"seed": -1}),
    _k("seed", {"seed": "lucky"}),
    _k("upcycle_eval_tokens", {"upcycle_eval_tokens": 0}),
    _k("upcycle_eval_tokens", {"upcycle_eval_tokens": 64}),  # fewer than one 128-token window
    _k("figures", {"figures": "loss_vs_d2"}),
    _k("figures", {"figures": ["loss_vs_d2", "loss_vs_d2"]}),
    _k("figures", {"figures": [LR_SWEEP]}, "config key 'figures'"),  # the figure draws grid.lr_sweep: empty
    # ----- data -----
    _k("data.corpus", {"data.corpus": "my corpus"}),
    _k("data.sources", {"data.sources": "web"}),
    _k("data.sources", {"data.sources": [], "data.files": []}, "config key 'data.sources'"),
    _k("data.files", {"data.files": ["/no/such/dir/book.txt"]}),
    _k("data.files", {"data.files": [""]}, "config key 'data.files.0'"),
    _k("data.text_field", {"data.text_field": ""}),
    _k("data.vocab_size", {"data.vocab_size": 257}),
    _k("data.tokenizer", {"data.tokenizer": 5}),
    _k("data.val_fraction", {"data.val_fraction": 0}),
    _k("data.val_fraction", {"data.val_fraction": 1.0}),
    _k("data.shards", {"data.shards": 0}),
    _k("data.max_document_chars", {"data.max_document_chars": 999}),
    # ----- models -----
    _k("models", {"models": {}}),
    _k("models", {"models.S": {"n_layer": 2, "d_model": 64, "n_head": 2, "d_ff": 256}}, "config key 'models.S'"),
    _k("models.*.n_layer", {"models.s.n_layer": "2"}),
    _k("models.*.d_model", {"models.s.d_model": 0}),
    _k("models.*.d_model", {"models.s.d_model": 66}, "config key 'models.s'"),  # 33-wide heads: RoPE needs even
    _k("models.*.n_head", {"models.s.n_head": 0}),
    _k("models.*.d_ff", {"models.s.d_ff": -1}),
    _k("models.*.n_kv_head", {"models.s.n_kv_head": 3}, "config key 'models.s'"),
    _k("models.*.rope_theta", {"models.s.rope_theta": 0}),
    _k("models.*.norm_eps", {"models.s.norm_eps": 0}),
    _k("models.*.qkv_bias", {"models.s.qkv_bias": "no"}),
    _k("models.*.tie_embeddings", {"models.s.tie_embeddings": None}),
    _k("models.*.init_std", {"models.s.init_std": 0}),
    _k("models.*.parametrization", {"models.s.parametrization": "ntk"}),
    _k("models.*.mup_base_d_model", {"models.s.parametrization": "mup"}, "config key 'models.s'"),
    _k("models.*.mup_base_d_model", {"models.s.mup_base_d_model": -64}),
    _k("models.*.mup_base_head_dim", {"models.s.mup_base_head_dim": -1}),
    _k(
        "models.*.mup_base_head_dim",
        {"models.s.parametrization": "mup", "models.s.mup_base_d_model": 63},
        "mup_base_head_dim",
    ),
    # ----- moe -----
    _k("moe.*.experts", {"moe.e8k2.experts": 0}),
    _k("moe.*.top_k", {"moe.e8k2.top_k": 0}),
    _k("moe.*.granularity", {"moe.e8k2.granularity": 0}),
    _k("moe.*.norm_topk_prob", {"moe.e8k2.norm_topk_prob": "yes"}),
    _k("moe.*.layers", {"moe.e8k2.layers": "odd"}),
    _k("moe.*.layers", {"moe.e8k2.layers": [7]}, "config key 'moe.e8k2'"),
    _k("moe.*.shared_expert_d_ff", {"moe.e8k2.shared_expert_d_ff": -1}),
    _k("moe.*.shared_expert_d_ff", {"moe.e8k2.shared_expert_d_ff": 4096}, "config key 'moe.e8k2'"),
    _k("moe.*.aux_loss_coef", {"moe.e8k2.aux_loss_coef": "x"}),
    _k("moe.*.z_loss_coef", {"moe.e8k2.z_loss_coef": -1}),
    _k("moe.*.capacity_factor", {"moe.e8k2.capacity_factor": -1}),
    _k("moe.*.router_bias", {"moe.e8k2.router_bias": 1}),
    _k("moe.*.method", {"moe.e8k2.method": 3}),
    _k("moe.*.router_init", {"moe.e8k2.router_init": "xavier"}),
    _k("moe.*.router_std", {"moe.e8k2.router_std": -0.1}),
    _k("moe.*.scale_spread", {"moe.e8k2.scale_spread": "up"}),
    _k("moe.*.noise_std", {"moe.e8k2.noise_std": -1}),
    _k("moe.*.drop_ratio", {"moe.e8k2.drop_ratio": 0.5}, "config key 'moe.e8k2'"),  # method naive
    _k("moe.*.drop_per_matrix_indices", {"moe.e8k2.drop_per_matrix_indices": "no"}),
    _k("moe.*.lr_policy", {"moe.e8k2.lr_policy": "linear"}),
    _k("moe.*.experts", {"moe.bad name": {"experts": 2, "top_k": 1}}, "config key 'moe'"),
    # ----- growth (config/warmstart.yaml) -----
    _k("growth.*.target", {"growth.w2_hc.target": "zz"}, base=WS),
    _k("growth.*.target", {"growth.w2_hc.target": "xs"}, base=WS, dag=True),  # smaller than the parent s
    _k("growth.*.method", {"growth.w2_hc.method": "magic"}, base=WS),
    _k("growth.*.depth", {"growth.w2_hc.depth": "wide"}, base=WS),
    _k("growth.*.new_blocks", {"growth.w2_hc.new_blocks": "random"}, base=WS),
    _k("growth.*.noise_std", {"growth.w2_hc.noise_std": -0.3}, base=WS),
    _k("growth.*.noise_std", {"growth.w2_sp.noise_std": 0.3}, "config key 'growth.w2_sp'", base=WS),
    _k("growth.*.shrink", {"growth.w2_sp.shrink": -0.5}, base=WS),
    _k("growth.*.perturb", {"growth.w2_sp.perturb": "x"}, base=WS),
    _k("growth.*.lr_policy", {"growth.w2_hc.lr_policy": "continue"}, base=WS),  # the parents train with wsd
    # ----- expansion (config/expert_upcycling.yaml) -----
    _k("expansion.*.factor", {"expansion.x2u.factor": "2"}, base=EX),
    _k("expansion.*.selection", {"expansion.x2u.selection": "random"}, base=EX),
    _k("expansion.*.utility_batches", {"expansion.x2g.utility_batches": 0}, base=EX),
    _k("expansion.*.utility_batches", {"expansion.x4u.utility_batches": 4}, "config key 'expansion.x4u'", base=EX),
    _k("expansion.*.utility_batch_size", {"expansion.x2g.utility_batch_size": 0}, base=EX),
    _k("expansion.*.router_offset", {"expansion.x2u.router_offset": "yes"}, base=EX),
    _k("expansion.*.noise_std", {"expansion.x2u.noise_std": -0.01}, base=EX),
    _k("expansion.*.lr_policy", {"expansion.x2u.lr_policy": "warm"}, base=EX),
    # ----- parents -----
    _k("parents.*.hf", {"parents.p": {"hf": 5, "tokens": "1T"}}, "config key 'parents.p.hf'"),
    _k("parents.*.hf", {"parents.p": {"hf": "", "tokens": "1T"}}, "config key 'parents.p.hf'"),
    _k("parents.*.tokens", {"parents.p": {"hf": "/no/such/model", "tokens": 0}}, "config key 'parents.p.tokens'"),
    _k("parents.*.tokens", {"parents.p": {"hf": "x"}}, "config key 'parents.p'"),
    # ----- train -----
    _k("train.seq_len", {"train.seq_len": 1}),
    _k("train.batch_size", {"train.batch_size": 1.5}),
    _k("train.micro_batch_size", {"train.micro_batch_size": 3}, "train.micro_batch_size 3"),
    _k("train.micro_batch_size", {"train.micro_batch_size": -1}),
    _k("train.lr", {"train.lr": 0}),
    _k("train.min_lr_ratio", {"train.min_lr_ratio": 1.5}),
    _k("train.warmup_frac", {"train.warmup_frac": 1.0}),
    _k("train.warmup_steps", {"train.warmup_steps": -1}),
    _k("train.lr_policy", {"train.lr_policy": "continue"}),
    _k("train.decay_frac", {"train.decay_frac": 0}),
    _k("train.decay_shape", {"train.decay_shape": "exp"}),
    _k("train.weight_decay", {"train.weight_decay": -0.1}),
    _k("train.beta1", {"train.beta1": 1.0}),
    _k("train.beta2", {"train.beta2": -0.5}),
    _k("train.adam_eps", {"train.adam_eps": 0}),
    _k("train.grad_clip", {"train.grad_clip": -1}),
    _k("train.flops_convention", {"train.flops_convention": "6ND"}),
    _k("train.device", {"train.device": "tpu"}, dag=True),
    _k("train.device", {"train.device": "cuda:x"}),
    _k("train.dtype", {"train.dtype": "fp16"}),
    _k("train.log_every", {"train.log_every": 0}),
    _k("train.eval_every", {"train.eval_every": -1}),
    _k("train.eval_tokens", {"train.eval_tokens": 0}),
    _k("train.eval_tokens", {"train.eval_tokens": 100}),  # eval_every 100: fewer than one 128-token window
    _k("train.tensorboard", {"train.tensorboard": "on"}),
    _k("train.backend", {"train.backend": "jax"}),
    _k("train.dense_cont_lr_policy", {"train.dense_cont_lr_policy": "linear"}),
    _k("train.threads", {"train.threads": 0}),
    _k("train.save_every", {"train.save_every": -1}),
    _k("train.dist_timeout", {"train.dist_timeout": 0}),
    # ----- evaluate -----
    _k("evaluate.max_tokens", {"evaluate.max_tokens": 0}),
    _k("evaluate.max_tokens", {"evaluate.max_tokens": 100}, dag=True),  # fewer than one 128-token window
    _k("evaluate.batch_size", {"evaluate.batch_size": 0}),
    # ----- cluster and site -----
    _k("cluster.*.nodes", {"cluster.dense.nodes": 0}),
    _k("cluster.*.nodes", {"cluster.dense": {"nodes": 2, "tasks": 1}}, "config key 'cluster.dense.tasks'"),
    _k("cluster.*.tasks", {"cluster.moe.tasks": 3}, "cluster.moe.tasks 3"),  # batch_size 4
    _k("cluster.*.gpus", {"cluster.dense.gpus": -1}),
    _k("cluster.*.gpus", {"cluster.dense": {"nodes": 2, "tasks": 2, "gpus": 3}}, "config key 'cluster.dense.gpus'"),
    _k("cluster.*.gpu_type", {"cluster.dense.gpu_type": "h100 80gb"}),
    _k("cluster.*.nodes", {"cluster.training": {"nodes": 1}}, "config key 'cluster'"),
    _k("site.account", {"site.account": 5}),
    _k("site.cpu_partition", {"site.cpu_partition": 5}),
    _k("site.gpu_partition", {"site.gpu_partition": ["gpu"]}),
    _k("site.gpu_type", {"site.gpu_type": "a100/40"}),
    _k("site.gpu_request", {"site.gpu_request": "both"}),
    _k("site.gpu_constraint", {"site.gpu_constraint": 1}),
    _k("site.cpu_constraint", {"site.cpu_constraint": 2}),
    _k("site.qos", {"site.qos": 3}),
    _k("site.gpu_extra", {"site.gpu_extra": "--exclusive --time=10"}),
    _k("site.max_runtime", {"site.max_runtime": 0}),
    _k("site.mfu", {"site.mfu": 1.5}),
    _k("site.mfu", {"site.mfu": 0}),
    _k("site.gpu_tflops", {"site.gpu_tflops": 0}),
    _k("site.tokens_per_second", {"site.tokens_per_second": -1}),
    # ----- grid -----
    _k("grid.dense.models", {"grid.dense.models": []}),
    _k("grid.dense.models", {"grid.dense.models": "s"}),
    _k("grid.dense.d1", {"grid.dense.d1": ["2.5X"]}),
    _k("grid.dense.d1", {"grid.dense.d1": ["200K", "200.1K"]}),  # 390 steps of 512 tokens, both
    _k("grid.upcycled.models", {"grid.upcycled.0.models": ["s@2"]}),
    _k("grid.upcycled.moe", {"grid.upcycled.0.moe": []}),
    _k("grid.upcycled.d1", {"grid.upcycled.0.d1": ["1e6"]}),
    _k("grid.upcycled.d1", {"grid.upcycled.1.d1": ["0.1M"]}),  # dense/s/d1_0.1M next to dense/s/d1_100K
    _k("grid.upcycled.d2", {"grid.upcycled.0.d2": [0]}),
    _k("grid.upcycled.moe", {"grid.upcycled.0.moe": ["g5"]}, "config key 'moe.g5'", extra={"moe.g5": NEW_MOE}),
    _k("grid.scratch_moe.models", {"grid.scratch_moe.0.models": ["zz"]}),
    _k("grid.scratch_moe.moe", {"grid.scratch_moe.0.moe": ["e8k2", "e8k2"]}),
    _k("grid.scratch_moe.d", {"grid.scratch_moe.1.d": ["50"]}),
    _k("grid.scratch_moe.d", {"grid.scratch_moe.1.d": ["1600K"]}),  # the first block's 1.6M, spelled otherwise
    _k("grid.dense_cont.models", {"grid.dense_cont.models": ["zz"]}),
    # the dense grid's 200K, spelled otherwise
    _k("grid.dense_cont.d1", {"grid.dense_cont.d1": ["0.2M", "800K"]}, extra=NO_REPLICAS, dag=True),
    _k("grid.dense_cont.d2", {"grid.dense_cont.d2": ["100K", "0.1M"]}),
    _k("grid.dense_cont", {"grid.dense_cont": {"models": ["s"], "d1": ["200K"]}}),
    _k("grid.lr_sweep.models", {"grid.lr_sweep.models": ["zz"]}, base=MUP),
    _k("grid.lr_sweep.lr", {"grid.lr_sweep.lr": [0]}, base=MUP),
    _k("grid.lr_sweep.lr", {"grid.lr_sweep.lr": [0.001, 0.001]}, base=MUP),
    _k("grid.lr_sweep.lr", {"grid.lr_sweep.lr": ["1e-3"]}, base=MUP),
    _k("grid.lr_sweep.d", {"grid.lr_sweep.d": ["10"]}, base=MUP),
    _k("grid.grown.models", {"grid.grown.models": ["zz"]}, base=WS),
    _k("grid.grown.growth", {"grid.grown.growth": ["nope"]}, base=WS),
    _k("grid.grown.d1", {"grid.grown.d1": []}, base=WS),
    _k("grid.grown.d2", {"grid.grown.d2": ["1X"]}, base=WS),
    _k("grid.expanded.models", {"grid.expanded.0.models": ["zz"]}, base=EX),
    _k("grid.expanded.moe", {"grid.expanded.0.moe": ["nope"]}, base=EX),
    _k("grid.expanded.d1", {"grid.expanded.1.d1": ["0.2M"]}, extra=NO_REPLICAS, base=EX),  # the scratch parents' 200K
    _k("grid.expanded.d2", {"grid.expanded.0.d2": [-1]}, base=EX),
    _k("grid.expanded.expansion", {"grid.expanded.0.expansion": ["nope"]}, base=EX),
    _k("grid.replicas.runs", {"grid.replicas.runs": "some"}),
    _k("grid.replicas.runs", {"grid.replicas.runs": [KINDS[UPCYCLED].run_id(**NOT_A_RUN)]}, dag=True),
    _k("grid.replicas.seeds", {"grid.replicas.seeds": 1}),
    _k("grid", {"grid.moe": {"models": ["s"]}}),
    # ----- fits -----
    _k("fits.*.law", {f"{UP}.law": 3}),
    _k("fits.*.where", {f"{UP}.where": "kind =="}, dag=True),
    _k("fits.*.where", {f"{UP}.where": "knd == 'upcycled'"}),
    _k("fits.*.where", {f"{CH}.where": "kind = 'dense'"}),
    _k("fits.*.map.*", {f"{CH}.map.X": "D"}, "config key 'fits.dense_chinchilla.map'"),
    _k("fits.*.map.*", {f"{CH}.map.N": "N_actve"}),
    _k("fits.*.map.*", {f"{CH}.map.N": 5}),
    _k("fits.*.map", {f"{CH}.map": {"D": "D", "loss": "val_loss"}}, "config key 'fits.dense_chinchilla.map'"),
    _k("fits.*.holdout", {f"{UP}_heldout.holdout": "D2 >"}),
    _k("fits.*.holdout", {f"{UP}_heldout.holdout": "D3 > 6e5"}),
    _k("fits.*.bootstrap", {f"{UP}.bootstrap": -1}),
    _k("fits.*.bootstrap", {f"{UP}.bootstrap": 1}),
    _k("fits.*.grid", {f"{CH}.grid": 0}),
    _k("fits.*.grid", {f"{CH}.grid": "fast"}),
    _k("fits", {"fits.Dense_Chinchilla": {"law": "chinchilla", "map": {"N": "N_active", "loss": "val_loss"}}}),
    # ----- planner -----
    _k("planner.model", {"planner.model": "zz"}, "config key 'planner"),
    _k("planner.moe", {"planner.moe": 5}),
    _k("planner.moe", {"planner.moe": "g5"}, extra={"moe.g5": NEW_MOE}, dag=True),  # 5 does not divide s's d_ff
    _k("planner.d1", {"planner.d1": "lots"}),
    _k("planner.extra_tokens", {"planner.extra_tokens": 0}),
    _k("planner.total_flops", {"planner.total_flops": -1}),
    _k("planner.upcycled_fit", {"planner.upcycled_fit": "nope"}),
    _k("planner.upcycled_fit", {"planner.upcycled_fit": "dense_chinchilla"}),
    _k("planner.scratch_fit", {"planner.scratch_fit": UPCYCLED_FIT}),
    _k("planner.dense_fit", {"planner.dense_fit": "upcycled_additive"}),
    _k("planner.max_extrapolation", {"planner.max_extrapolation": 1}),
    _k("planner.grown_fit", {"planner.grown_fit": "nope", "planner.grown_model": "l"}),
    _k("planner.grown_fit", {"planner.grown_fit": "dense_chinchilla", "planner.grown_model": "l"}),
    _k("planner.grown_model", {"planner.grown_model": "zz", "planner.grown_fit": UPCYCLED_FIT}),
    _k("planner.expanded_fit", {"planner.expanded_fit": "nope"}),
    _k("planner.expanded_fit", {"planner.expanded_fit": "scratch_chinchilla"}),
)


def snakemake_cases() -> list[BadConfig]:
    """The cases also run through a real ``snakemake -n`` (the Snakefile's own path to one line, exit 2)."""
    return [c for c in CASES if c.dag]
