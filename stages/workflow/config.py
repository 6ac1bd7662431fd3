"""Workflow configuration: JSON-schema validation with defaults, then the checks a schema cannot express.

The Snakefile calls :func:`validate_config` while building the DAG. A bad config is reported as one
line naming the key (``config key 'grid.dense.d1': ...``) before any job runs, so a typo never costs
a half-finished grid. Torch-free on purpose (DAG building must stay fast).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from stages.core.cli import UserError, parse_tokens
from stages.core.options import from_mapping, pick, validate
from stages.model.config import ModelConfig, MoEConfig
from stages.surgery.recipe import UpcycleRecipe, check_compatible
from stages.workflow.schema import config_schema

# the fits (config["fits"] names) each figure draws; "*" = every enabled fit
FIGURE_FITS: dict[str, tuple[str, ...]] = {
    "loss_vs_d2": ("upcycled",),
    "alpha_eff": ("upcycled",),
    "loss_vs_compute": (),
    "sparsity": ("sparsity",),
    "threshold": ("upcycled", "scratch_chinchilla"),
    "predicted_vs_observed": ("*",),
    "residuals": ("*",),
    "training_curves": (),  # draws each run's metrics.csv, no fit
}
REQUIRED_FITS = {
    "alpha_eff": ("upcycled",),
    "threshold": ("upcycled", "scratch_chinchilla"),
    "predicted_vs_observed": ("*",),
    "residuals": ("*",),
}
TOKEN_KEYS = {"dense": ("d1",), "upcycled": ("d1", "d2"), "scratch_moe": ("d",), "dense_cont": ("d1", "d2")}


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
    validate(cfg, config_schema())
    _check_semantics(cfg)
    return cfg


def moe_config(cfg: dict[str, Any], moe: str) -> MoEConfig:
    """The routing group of MoE variant ``moe`` (its other keys belong to the recipe and the lr policy)."""
    return from_mapping(MoEConfig, pick(MoEConfig, cfg["moe"][moe]), f"moe.{moe}")


def upcycle_recipe(cfg: dict[str, Any], moe: str) -> UpcycleRecipe:
    """The upcycling recipe of MoE variant ``moe``."""
    return from_mapping(UpcycleRecipe, pick(UpcycleRecipe, cfg["moe"][moe]), f"moe.{moe}")


def model_config(cfg: dict[str, Any], name: str, moe: str | None = None) -> ModelConfig:
    """The ModelConfig of grid model ``name`` (optionally with MoE variant ``moe``)."""
    spec = dict(cfg["models"][name])
    spec.update(vocab_size=cfg["data"]["vocab_size"], max_seq_len=cfg["train"]["seq_len"])
    return ModelConfig(**spec, moe=moe_config(cfg, moe) if moe is not None else None)


def _check_semantics(cfg: dict[str, Any]) -> None:
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
    policies = [cfg["train"]["lr_policy"], cfg["train"]["dense_cont_lr_policy"]]
    policies += [m["lr_policy"] for m in cfg["moe"].values()]
    if "wsd" in policies and cfg["train"]["warmup_steps"] == 0:
        raise UserError(
            "config key 'train.warmup_steps': a wsd schedule needs a fixed warmup in steps (warmup_frac "
            "would give every budget its own warmup, and the budgets could not share a stable run)"
        )
    tokens_per_step = cfg["train"]["batch_size"] * cfg["train"]["seq_len"]
    for kind, section in cfg["grid"].items():
        if not section:
            continue
        for model in section["models"]:
            if model not in cfg["models"]:
                raise UserError(f"config key 'grid.{kind}.models': {model!r} is not defined under 'models'")
            for moe in section.get("moe", []):
                if moe not in cfg["moe"]:
                    raise UserError(f"config key 'grid.{kind}.moe': {moe!r} is not defined under 'moe'")
                try:
                    model_config(cfg, model, moe)
                    if kind == "upcycled":
                        check_compatible(upcycle_recipe(cfg, moe), moe_config(cfg, moe), cfg["models"][model]["d_ff"])
                except UserError as err:
                    raise UserError(f"config key 'moe.{moe}' (with model {model!r}): {err}") from None
        for key in TOKEN_KEYS[kind]:
            values: dict[int, str] = {}
            for label in section[key]:
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
    from stages.laws.forms import LAWS

    enabled = [name for name, fit in cfg["fits"].items() if fit]
    for figure in cfg["figures"]:
        if figure not in FIGURE_FITS:
            raise UserError(f"config key 'figures': unknown figure {figure!r} (known: {', '.join(FIGURE_FITS)})")
        for needed in REQUIRED_FITS.get(figure, ()):
            if (needed == "*" and not enabled) or (needed != "*" and needed not in enabled):
                what = "at least one fit" if needed == "*" else f"the fit '{needed}'"
                raise UserError(f"config key 'figures': {figure!r} needs {what} under 'fits'")
    planner = cfg.get("planner")
    if planner:
        for key in ("upcycled_fit", "scratch_fit", "dense_fit"):
            if planner[key] not in enabled and key == "upcycled_fit":
                raise UserError(f"config key 'planner.{key}': {planner[key]!r} is not an enabled fit")
        if planner["model"] not in cfg["models"] or planner["moe"] not in cfg["moe"]:
            raise UserError("config key 'planner': model and moe must name entries of 'models' and 'moe'")
        parse_tokens(planner["d1"], "config key 'planner.d1'")
        parse_tokens(planner["extra_tokens"], "config key 'planner.extra_tokens'")
    for name, fit in cfg["fits"].items():
        if fit is None:
            continue
        if fit["law"] not in LAWS:
            raise UserError(f"config key 'fits.{name}.law': unknown law {fit['law']!r} (known: {', '.join(LAWS)})")
