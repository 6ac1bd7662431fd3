"""Workflow configuration: JSON-schema validation with defaults, then the checks a schema cannot express.

The Snakefile calls :func:`validate_config` while building the DAG. A bad config is reported as one
line naming the key (``config key 'grid.dense.d1': ...``) before any job runs, so a typo never costs
a half-finished grid. Torch-free on purpose (DAG building must stay fast).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from stages.core.artifacts import sha256_file
from stages.core.cli import UserError, parse_tokens
from stages.core.kinds import CONTINUED, DENSE, EXPAND, KINDS, UPCYCLE
from stages.core.options import from_mapping, pick, validate
from stages.interop.hf_config import dense_config, hf_tokenizer, read_config, weight_files
from stages.model.config import ModelConfig, MoEConfig
from stages.report.figure_specs import EVERY_FIT, FIGURE_SPECS
from stages.surgery.expansion_recipe import ExpansionRecipe, expanded_moe
from stages.surgery.growth_recipe import GrowthRecipe, check_growth
from stages.surgery.recipe import UpcycleRecipe, check_compatible
from stages.training.schedule import warmup_problem
from stages.workflow.cluster import job_gpus, site_settings, training_job
from stages.workflow.collisions import check_budget_labels, check_name_case
from stages.workflow.fit_checks import check_fits
from stages.workflow.schema import RESERVED_STUDIES, config_schema
from stages.workflow.sections import TRAINING_RULES

# the devices a training job accepts (stages.training.runtime.device)
DEVICE = re.compile(r"^(cpu|auto|cuda(:[0-9]+)?)$")


def grid_blocks(cfg: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The blocks of grid section ``kind``: each is one cross product (models x moe x budgets).

    A section is one block, or a list of blocks when one product would train cells nobody asked for (e.g.
    three lr policies on one D1 only, next to the full D1 x D2 grid of the main variant).
    """
    section = cfg["grid"].get(kind)
    if not section:
        return []
    return list(section) if isinstance(section, list) else [section]


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return a validated copy of ``config`` with defaults filled in; raise UserError naming the key."""
    cfg = copy.deepcopy(dict(config))
    if cfg.get("study") in RESERVED_STUDIES:  # the schema's pattern would only say "not valid"
        raise UserError(
            f"config key 'study': {cfg['study']!r} is the name of a top-level folder of results/ (results/"
            f"{cfg['study']}/ of the unnamed study), which the study's own folder would collide with; choose "
            f"another name (reserved: {', '.join(RESERVED_STUDIES)})"
        )
    validate(cfg, config_schema())
    _check_semantics(cfg)
    return cfg


def lr_policy(cfg: dict[str, Any], kind: str, variant: str = "") -> str:
    """The lr policy of a run of ``kind`` (with variant ``variant``): the one place it is decided, where the kind's
    entry of stages.core.kinds says it is set (train.lr_policy, train.dense_cont_lr_policy, or its variant's)."""
    section, key = KINDS[kind].lr_policy.split(".")
    return cfg[section][key] if section == "train" else cfg[section][variant][key]


def moe_config(cfg: dict[str, Any], moe: str) -> MoEConfig:
    """The routing group of MoE variant ``moe`` (its other keys belong to the recipe and the lr policy)."""
    return from_mapping(MoEConfig, pick(MoEConfig, cfg["moe"][moe]), f"moe.{moe}")


def upcycle_recipe(cfg: dict[str, Any], moe: str) -> UpcycleRecipe:
    """The upcycling recipe of MoE variant ``moe``."""
    return from_mapping(UpcycleRecipe, pick(UpcycleRecipe, cfg["moe"][moe]), f"moe.{moe}")


def growth_recipe(cfg: dict[str, Any], growth: str) -> GrowthRecipe:
    """The growth recipe of growth variant ``growth`` (its other keys are the target and the lr policy)."""
    return from_mapping(GrowthRecipe, pick(GrowthRecipe, cfg["growth"][growth]), f"growth.{growth}")


def expansion_recipe(cfg: dict[str, Any], expansion: str) -> ExpansionRecipe:
    """The expansion recipe of expansion variant ``expansion`` (its other key is the lr policy)."""
    return from_mapping(ExpansionRecipe, pick(ExpansionRecipe, cfg["expansion"][expansion]), f"expansion.{expansion}")


def expanded_moe_config(cfg: dict[str, Any], moe: str, expansion: str) -> MoEConfig:
    """The routing of MoE variant ``moe`` expanded by variant ``expansion`` (factor x its experts, top-k kept)."""
    return expanded_moe(moe_config(cfg, moe), expansion_recipe(cfg, expansion))


def growth_target(cfg: dict[str, Any], growth: str) -> str:
    """The model (an entry of ``models``) that growth variant ``growth`` grows its parent into."""
    return str(cfg["growth"][growth]["target"])


def model_config(cfg: dict[str, Any], name: str, moe: str | None = None) -> ModelConfig:
    """The ModelConfig of grid model ``name`` (optionally with MoE variant ``moe``); an imported parent's is
    read from its ``config.json``, at the study's context length."""
    routing = moe_config(cfg, moe) if moe is not None else None
    if name in cfg.get("parents", {}):
        return dataclasses.replace(parent_config(cfg, name), moe=routing)
    spec = dict(cfg["models"][name])
    spec.update(vocab_size=corpus_vocab_size(cfg), max_seq_len=cfg["train"]["seq_len"])
    return ModelConfig(**spec, moe=routing)


def parent_config(cfg: dict[str, Any], name: str) -> ModelConfig:
    """The dense shape of imported parent ``name`` as the import will write it (``stages.interop.hf_config``)."""
    directory = Path(cfg["parents"][name]["hf"])
    try:
        if not directory.is_dir():
            raise UserError(f"{directory}: not a directory")
        hf = read_config(directory)
        weight_files(directory)
        return dense_config(hf, directory / "config.json", max_seq_len=cfg["train"]["seq_len"])
    except UserError as err:
        raise UserError(f"config key 'parents.{name}.hf': {err}") from None


def corpus_vocab_size(cfg: dict[str, Any]) -> int:
    """The vocabulary of the study's corpus: the trained BPE's ``data.vocab_size``, or with ``data.tokenizer``
    the embedding rows of that parent (its ``config.json``'s vocab_size)."""
    name = cfg["data"].get("tokenizer")
    return parent_config(cfg, name).vocab_size if name else cfg["data"]["vocab_size"]


def parent_files(cfg: dict[str, Any], name: str) -> list[str]:
    """The files of imported parent ``name`` that its import reads (a rule's input: an edit reimports)."""
    directory = Path(cfg["parents"][name]["hf"])
    return [str(directory / f) for f in ("config.json", *weight_files(directory))]


def tokenizer_files(cfg: dict[str, Any]) -> list[str]:
    """The files the data stage reads to encode with ``data.tokenizer``'s tokenizer ([] to train one)."""
    name = cfg["data"].get("tokenizer")
    if not name:
        return []
    directory = Path(cfg["parents"][name]["hf"])
    names = ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json")
    return [str(directory / f) for f in names if (directory / f).is_file()]


def _check_parents(cfg: dict[str, Any]) -> None:
    """Parents: names apart from 'models', readable folders, and one tokenizer for the whole corpus."""
    parents = cfg["parents"]
    for name, parent in parents.items():
        if name in cfg["models"]:
            raise UserError(f"config key 'parents.{name}': also defined under 'models' (one name, one model)")
        parse_tokens(parent["tokens"], f"config key 'parents.{name}.tokens'")
        parent_config(cfg, name)
    tokenizer = cfg["data"]["tokenizer"]
    if tokenizer is not None:
        if tokenizer not in parents:
            raise UserError(f"config key 'data.tokenizer': {tokenizer!r} is not defined under 'parents'")
        try:
            hf_tokenizer(Path(parents[tokenizer]["hf"]))
        except UserError as err:
            raise UserError(f"config key 'data.tokenizer': {err}") from None
    dense_continued = [kind for kind in CONTINUED if KINDS[kind].continues == DENSE]  # what a parent can start
    used = sorted({m for kind in dense_continued for b in grid_blocks(cfg, kind) for m in b["models"] if m in parents})
    for name in used:
        if tokenizer is None:
            raise UserError(
                f"config key 'data.tokenizer': the grid starts from parent {name!r}; set data.tokenizer: {name} "
                "so that the corpus is tokenized with its tokenizer"
            )
        if name != tokenizer and _tokenizer_identity(cfg, name) != _tokenizer_identity(cfg, tokenizer):
            raise UserError(
                f"config key 'parents.{name}': its tokenizer.json or vocab_size differs from data.tokenizer "
                f"{tokenizer!r}'s; one study tokenizes its corpus once (run a study per tokenizer)"
            )


def _tokenizer_identity(cfg: dict[str, Any], name: str) -> tuple[str, int]:
    tok = hf_tokenizer(Path(cfg["parents"][name]["hf"]))
    return sha256_file(tok.path), parent_config(cfg, name).vocab_size


def _check_semantics(cfg: dict[str, Any]) -> None:
    _check_cluster(cfg)
    check_name_case(cfg)
    if not DEVICE.match(str(cfg["train"]["device"])):
        raise UserError(
            f"config key 'train.device': {cfg['train']['device']!r} is not a device of the training jobs (cpu, cuda, "
            "cuda:<index> or auto)"
        )
    data = cfg["data"]
    if not data["sources"] and not data["files"]:
        raise UserError("config key 'data.sources': no text source (set data.sources or data.files)")
    from stages.corpus.sources import SOURCES

    for source in data["sources"]:
        if source not in SOURCES:
            known = ", ".join(sorted(SOURCES))
            raise UserError(f"config key 'data.sources': unknown source {source!r} (known: {known})")
    from stages.corpus.sources.files import expand_entries

    for path, _ in expand_entries(data["files"], key="config key 'data.files'"):
        if not path.is_file():
            raise UserError(f"config key 'data.files': no such file or folder {str(path)!r}")
    _check_parents(cfg)
    for name in cfg["models"]:
        try:
            model_config(cfg, name)
        except UserError as err:
            raise UserError(f"config key 'models.{name}': {err}") from None
    for name in cfg["moe"]:
        try:
            upcycle_recipe(cfg, name)
        except UserError as err:
            raise UserError(f"config key 'moe.{name}': {err}") from None
    for name in cfg["expansion"]:
        try:
            expansion_recipe(cfg, name)
        except UserError as err:
            raise UserError(f"config key 'expansion.{name}': {err}") from None
    for name, variant in cfg["growth"].items():
        try:
            growth_recipe(cfg, name)
        except UserError as err:
            raise UserError(f"config key 'growth.{name}': {err}") from None
        if variant["target"] not in cfg["models"]:
            raise UserError(f"config key 'growth.{name}.target': {variant['target']!r} is not defined under 'models'")
    policies = [cfg["train"]["lr_policy"], cfg["train"]["dense_cont_lr_policy"]]
    for kind in KINDS.values():  # the lr policies of the variants the grid trains (variants nobody trains: skip)
        used = {v for block in grid_blocks(cfg, kind.name) for v in block.get(kind.variant, [])}
        policies += [lr_policy(cfg, kind.name, v) for v in sorted(used) if v in cfg.get(kind.variant, {})]
    if "wsd" in policies and cfg["train"]["warmup_steps"] == 0:
        raise UserError(
            "config key 'train.warmup_steps': a wsd schedule needs a fixed warmup in steps (warmup_frac "
            "would give every budget its own warmup, and the budgets could not share a stable run)"
        )
    for name, variant in [
        *(("moe." + k, v) for k, v in cfg["moe"].items()),
        *(("growth." + k, v) for k, v in cfg["growth"].items()),
        *(("expansion." + k, v) for k, v in cfg["expansion"].items()),
    ]:
        if variant["lr_policy"] == "continue" and cfg["train"]["lr_policy"] == "wsd":
            raise UserError(
                f"config key '{name}.lr_policy': 'continue' resumes the dense parent's cosine schedule, but "
                "the parents train with wsd (their schedule has already decayed); use constant_min or wsd"
            )
    if cfg["train"]["backend"] == "nanotron":
        _check_nanotron(cfg)
    tokens_per_step = cfg["train"]["batch_size"] * cfg["train"]["seq_len"]
    for kind in KINDS:
        for block in grid_blocks(cfg, kind):
            _check_block(cfg, kind, block, tokens_per_step)
    check_budget_labels([(kind, b) for kind in KINDS.values() for b in grid_blocks(cfg, kind.name)], tokens_per_step)
    _check_evaluation(cfg)
    enabled = [name for name, fit in cfg["fits"].items() if fit]
    for figure in cfg["figures"]:
        if figure not in FIGURE_SPECS:
            raise UserError(f"config key 'figures': unknown figure {figure!r} (known: {', '.join(FIGURE_SPECS)})")
        spec = FIGURE_SPECS[figure]
        if spec.runs_of and not grid_blocks(cfg, spec.runs_of):
            raise UserError(f"config key 'figures': {figure!r} draws the runs of grid.{spec.runs_of}, which is empty")
        for needed in spec.fits if spec.needs_fits else ():
            if (needed == EVERY_FIT and not enabled) or (needed != EVERY_FIT and needed not in enabled):
                what = "at least one fit" if needed == EVERY_FIT else f"the fit '{needed}'"
                raise UserError(f"config key 'figures': {figure!r} needs {what} under 'fits'")
    planner = cfg.get("planner")
    if planner:
        if planner["model"] not in cfg["models"] or planner["moe"] not in cfg["moe"]:
            raise UserError("config key 'planner': model and moe must name entries of 'models' and 'moe'")
        if planner["grown_fit"] is not None and planner["grown_model"] not in cfg["models"]:
            raise UserError(
                f"config key 'planner.grown_model': {planner['grown_model']!r} must name the grown model (an entry "
                "of 'models') when planner.grown_fit is set"
            )
        try:  # the planner's N1 and N_active (stages.workflow.grid.Grid.planner_args)
            model_config(cfg, planner["model"], planner["moe"])
        except UserError as err:
            raise UserError(f"config key 'planner.moe' (with model {planner['model']!r}): {err}") from None
        parse_tokens(planner["d1"], "config key 'planner.d1'")
        parse_tokens(planner["extra_tokens"], "config key 'planner.extra_tokens'")
    check_fits(cfg)


def _check_evaluation(cfg: dict[str, Any]) -> None:
    """Every evaluation slice holds at least one window of train.seq_len tokens (else the evaluation, the surgery's
    step-0 check or the periodic validation would stop with nothing to measure, after the training before it)."""
    seq_len = cfg["train"]["seq_len"]
    slices = [("evaluate.max_tokens", cfg["evaluate"]["max_tokens"])]
    if cfg["train"]["eval_every"]:
        slices.append(("train.eval_tokens", cfg["train"]["eval_tokens"]))
    if any(KINDS[kind].surgery and grid_blocks(cfg, kind) for kind in KINDS):
        slices.append(("upcycle_eval_tokens", cfg["upcycle_eval_tokens"]))
    for key, tokens in slices:
        if tokens < seq_len:
            raise UserError(
                f"config key '{key}': {tokens} tokens are fewer than one window of train.seq_len {seq_len} tokens"
            )


def _check_nanotron(cfg: dict[str, Any]) -> None:
    """train.backend nanotron: every trained model, MoE variant and lr policy of the grid must be one nanotron
    main trains as our trainer would (stages.interop.nanotron_config.check_trainable), refused in one line."""
    from stages.interop.nanotron_config import check_trainable
    from stages.training.options import TrainConfig

    t = cfg["train"]
    for kind in KINDS.values():
        for block in grid_blocks(cfg, kind.name):
            for model in block["models"]:
                for variant in block.get(kind.variant) or [""]:
                    policy = lr_policy(cfg, kind.name, variant)
                    train = from_mapping(TrainConfig, {**pick(TrainConfig, t), "lr_policy": policy}, "train")
                    key = f"{kind.variant}.{variant}" if variant else f"models.{model}"
                    if kind.surgery == EXPAND:  # the expanded shape of each MoE variant the block expands
                        base = model_config(cfg, model)
                        moes = [expanded_moe_config(cfg, moe, variant) for moe in block["moe"]]
                        shapes = [dataclasses.replace(base, moe=moe) for moe in moes]
                    else:
                        shapes = [model_config(cfg, model, variant if kind.moe else None)]
                    try:
                        for shape in shapes:
                            if shape.moe is not None and shape.moe.router_bias:
                                raise UserError(
                                    "moe.router_bias: nanotron's MoE has no router bias (utility-based expansion puts "
                                    "its offsets there); train it with train.backend torch, or set router_offset false"
                                )
                            check_trainable(shape, train)
                    except UserError as err:
                        raise UserError(f"config key '{key}' (grid.{kind.name}, model {model!r}): {err}") from None
    for rule, placement in (cfg.get("cluster") or {}).items():
        if placement and placement.get("tasks", 1) > 1:
            raise UserError(
                f"config key 'cluster.{rule}.tasks': the nanotron backend runs one process per job (nanotron starts "
                "one per GPU itself); set tasks: 1 and the job's gpus"
            )


def _check_cluster(cfg: dict[str, Any]) -> None:
    """Every training rule's tasks spread evenly over its nodes, and its processes and passes split the batch; the
    site's extra sbatch flags leave the ones the workflow sets alone."""
    site_settings(cfg)
    batch, micro = cfg["train"]["batch_size"], cfg["train"]["micro_batch_size"]
    backend = cfg["train"].get("backend", "torch")
    for rule in TRAINING_RULES:
        job = training_job(cfg, rule)
        if job.tasks > 1 and backend != "torch":
            raise UserError(
                f"config key 'cluster.{rule}.tasks': train.backend {backend} starts its own processes, one per GPU; "
                "keep tasks 1 and set gpus"
            )
        if job.tasks % job.nodes:
            raise UserError(
                f"config key 'cluster.{rule}.tasks': {job.tasks} tasks do not spread evenly over {job.nodes} nodes"
            )
        if job_gpus(job) % job.nodes:
            raise UserError(
                f"config key 'cluster.{rule}.gpus': {job_gpus(job)} GPUs do not spread evenly over {job.nodes} nodes"
            )
        if batch % (job.tasks * (micro or 1)):
            parts = [f"cluster.{rule}.tasks {job.tasks}"] if job.tasks > 1 else []
            parts += [f"train.micro_batch_size {micro}"] if micro else []
            raise UserError(f"config key 'train.batch_size': {batch} is not a multiple of {' x '.join(parts)}")


def _check_block(cfg: dict[str, Any], kind: str, section: dict[str, Any], tokens_per_step: int) -> None:
    """One block of a grid section: its models, MoE variants and token budgets."""
    for model in section["models"]:
        if model in cfg["parents"] and KINDS[kind].continues != DENSE:
            raise UserError(
                f"config key 'grid.{kind}.models': {model!r} is an imported parent (parents.{model}); a parent is "
                "upcycled, grown or continued (grid.upcycled, grid.grown, grid.dense_cont), never trained from scratch "
                "or expanded (a parent is dense)"
            )
        if model not in cfg["models"] and model not in cfg["parents"]:
            raise UserError(f"config key 'grid.{kind}.models': {model!r} is not defined under 'models'")
        if model in cfg["models"] and kind in CONTINUED and "d1" not in section:
            raise UserError(f"config key 'grid.{kind}.d1': needed for the trained model {model!r}")
        for moe in section.get("moe", []):
            if moe not in cfg["moe"]:
                raise UserError(f"config key 'grid.{kind}.moe': {moe!r} is not defined under 'moe'")
            try:
                shape = model_config(cfg, model, moe)
                if KINDS[kind].surgery == UPCYCLE:
                    check_compatible(upcycle_recipe(cfg, moe), moe_config(cfg, moe), shape.d_ff)
            except UserError as err:
                raise UserError(f"config key 'moe.{moe}' (with model {model!r}): {err}") from None
        for expansion in section.get("expansion", []):
            if expansion not in cfg["expansion"]:
                raise UserError(f"config key 'grid.{kind}.expansion': {expansion!r} is not defined under 'expansion'")
        for growth in section.get("growth", []):
            if growth not in cfg["growth"]:
                raise UserError(f"config key 'grid.{kind}.growth': {growth!r} is not defined under 'growth'")
            target = growth_target(cfg, growth)
            try:
                check_growth(model_config(cfg, model), model_config(cfg, target), growth_recipe(cfg, growth))
            except UserError as err:
                raise UserError(
                    f"config key 'growth.{growth}.target': {target!r} cannot be grown from {model!r} ({err})"
                ) from None
    for key in KINDS[kind].budgets:
        values: dict[int, str] = {}
        for label in section.get(key, []):
            n = parse_tokens(label, f"config key 'grid.{kind}.{key}'")
            if n in values:
                raise UserError(
                    f"config key 'grid.{kind}.{key}': duplicate token budget {label!r} (same as {values[n]!r})"
                )
            if n < tokens_per_step:
                raise UserError(
                    f"config key 'grid.{kind}.{key}': {label!r} is less than one optimizer step "
                    f"({tokens_per_step} tokens = train.batch_size x train.seq_len)"
                )
            values[n] = str(label)
            for variant in section.get(KINDS[kind].variant, [""]) if key == KINDS[kind].budget else ():
                run = f"grid.{kind}.{key} {label!r}"
                problem = warmup_problem(
                    lr_policy(cfg, kind, variant), n // tokens_per_step, cfg["train"]["warmup_steps"], run
                )
                if problem:
                    raise UserError(f"config key 'train.warmup_steps': {problem}")
