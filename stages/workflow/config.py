"""Workflow configuration: JSON-schema validation with defaults, then the checks a schema cannot express.

The Snakefile calls :func:`validate_config` while building the DAG. A bad config is reported as one
line naming the key (``config key 'grid.dense.d1': ...``) before any job runs, so a typo never costs
a half-finished grid. Torch-free on purpose (DAG building must stay fast).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from stages.core.cli import UserError, parse_tokens
from stages.model.config import ModelConfig, MoEConfig

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
# the fits (config["fits"] names) each figure draws; "*" = every enabled fit
FIGURE_FITS: dict[str, tuple[str, ...]] = {
    "loss_vs_d2": ("upcycled",),
    "alpha_eff": ("upcycled",),
    "loss_vs_compute": (),
    "sparsity": ("sparsity",),
    "threshold": ("upcycled", "scratch_chinchilla"),
    "predicted_vs_observed": ("*",),
    "residuals": ("*",),
}
REQUIRED_FITS = {"alpha_eff": ("upcycled",), "threshold": ("upcycled", "scratch_chinchilla"),
                 "predicted_vs_observed": ("*",), "residuals": ("*",)}
TOKEN_KEYS = {"dense": ("d1",), "upcycled": ("d1", "d2"), "scratch_moe": ("d",), "dense_cont": ("d1", "d2")}


def _with_defaults(validator_class: Any) -> Any:
    """A validator that fills ``default`` values of missing properties before validating them."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


DefaultingValidator = _with_defaults(Draft202012Validator)


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: ValidationError) -> str:
    """One line for a schema error, naming the key."""
    key = _key(error.absolute_path)
    v, value = error.validator, error.instance
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        where = f"{key}.{unknown[0]}" if unknown and key != "<top level>" else (unknown[0] if unknown else key)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"config key '{where}': unknown key{hint}"
    if v == "required":
        return f"config key '{key}': {error.message}"
    if v == "type":
        return f"config key '{key}': expected {error.validator_value}, got {value!r}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"config key '{key}': {value!r} is out of range ({v} {error.validator_value})"
    if v in ("minItems", "minProperties"):
        return f"config key '{key}': must not be empty"
    if v == "uniqueItems":
        return f"config key '{key}': has duplicate entries {value!r}"
    if v == "pattern":
        return f"config key '{key}': {value!r} is not valid (expected e.g. 250K, 1M, 4096 or a simple name)"
    if v == "enum":
        return f"config key '{key}': {value!r} is not one of {error.validator_value}"
    return f"config key '{key}': {error.message}"


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


def validate_config(config: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """Return a validated copy of ``config`` with defaults filled in; raise UserError naming the key."""
    schema = load_yaml(schema_path)
    cfg = copy.deepcopy(dict(config))
    error = best_match(DefaultingValidator(schema).iter_errors(cfg))
    if error is not None:
        raise UserError(_describe(error))
    _check_semantics(cfg)
    return cfg


def model_config(cfg: dict[str, Any], name: str, moe: str | None = None) -> ModelConfig:
    """The ModelConfig of grid model ``name`` (optionally with MoE variant ``moe``)."""
    spec = dict(cfg["models"][name])
    spec.update(vocab_size=cfg["data"]["vocab_size"], max_seq_len=cfg["train"]["seq_len"])
    moe_spec = None
    if moe is not None:
        m = cfg["moe"][moe]
        layers = m["layers"]
        if layers == "all":
            layers = None
        elif layers == "every_other":
            layers = list(range(1, spec["n_layer"], 2))
        moe_spec = MoEConfig(
            experts=m["experts"], top_k=m["top_k"], granularity=m["granularity"], norm_topk_prob=m["norm_topk_prob"],
            layers=layers, shared_expert_d_ff=m["shared_expert_d_ff"], aux_loss_coef=m["aux_loss_coef"],
            z_loss_coef=m["z_loss_coef"], capacity_factor=m["capacity_factor"],
        )
    return ModelConfig(**spec, moe=moe_spec)


def _check_semantics(cfg: dict[str, Any]) -> None:
    data = cfg["data"]
    if not data["sources"] and not data["files"]:
        raise UserError("config key 'data.sources': no text source (set data.sources or data.files)")
    from stages.corpus.sources import SOURCES

    for source in data["sources"]:
        if source not in SOURCES:
            known = ", ".join(sorted(SOURCES))
            raise UserError(f"config key 'data.sources': unknown source {source!r} (known: {known})")
    for name in cfg["models"]:
        try:
            model_config(cfg, name)
        except UserError as err:
            raise UserError(f"config key 'models.{name}': {err}") from None
    for name, m in cfg["moe"].items():
        if m["method"] == "virtual_group" and m["experts"] % m["granularity"]:
            raise UserError(f"config key 'moe.{name}.experts': {m['experts']} is not a multiple of granularity "
                            f"{m['granularity']} (virtual_group)")
        if m["drop_ratio"] and m["method"] != "drop":
            raise UserError(f"config key 'moe.{name}.drop_ratio': only used by method 'drop'")
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
                except UserError as err:
                    raise UserError(f"config key 'moe.{moe}' (with model {model!r}): {err}") from None
        for key in TOKEN_KEYS[kind]:
            values: dict[int, str] = {}
            for label in section[key]:
                n = parse_tokens(label, f"config key 'grid.{kind}.{key}'")
                if n in values:
                    raise UserError(f"config key 'grid.{kind}.{key}': duplicate token budget {label!r} "
                                    f"(same as {values[n]!r})")
                if n < tokens_per_step:
                    raise UserError(f"config key 'grid.{kind}.{key}': {label!r} is less than one optimizer step "
                                    f"({tokens_per_step} tokens = train.batch_size x train.seq_len)")
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
