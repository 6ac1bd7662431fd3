"""Typed option groups: one definition per option (name, type, default, unit, bounds, help).

An option group is a frozen dataclass whose fields are declared with :func:`option`. Everything else is
derived from that one declaration, so it cannot drift:

* :func:`schema_of` gives the group's JSON-schema (the workflow's config schema is assembled from these);
* :func:`from_mapping` validates a mapping against that schema, fills defaults and builds the dataclass,
  raising a one-line :class:`UserError` that names the key (``train.lr: ...``);
* :func:`to_json` / :func:`from_json` carry a validated group from a Snakemake rule to a stage command
  (``--train '{"lr": 0.005, ...}'``), where it is validated again with the same rules.

Adding an option is one field here plus the code that uses it. Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal, TypeVar

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from stages.core.cli import UserError, parse_json_object

T = TypeVar("T")
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 - the argparse word for it
    unit: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    exclusive_maximum: float | None = None,
    schema: dict[str, Any] | None = None,
) -> Any:
    """A dataclass field that carries its own documentation and bounds (``schema`` overrides the type's)."""
    bounds = {
        "minimum": minimum,
        "maximum": maximum,
        "exclusiveMinimum": exclusive_minimum,
        "exclusiveMaximum": exclusive_maximum,
    }
    meta = {"help": help, "unit": unit, "bounds": {k: v for k, v in bounds.items() if v is not None}, "schema": schema}
    if isinstance(default, (list, dict, tuple)) and not isinstance(default, tuple):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_schema(tp: Any) -> dict[str, Any]:
    """JSON-schema of a Python annotation (the subset option groups use)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        schemas = [_type_schema(a) for a in members]
        if type(None) in args:
            schemas.append({"type": "null"})
        if all(set(s) == {"type"} and isinstance(s["type"], str) for s in schemas):
            return {"type": [s["type"] for s in schemas]}
        return {"anyOf": schemas}
    if origin in (tuple, list):
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1])}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"option type {tp!r} has no JSON-schema mapping")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The documented fields of an option group (fields declared with :func:`option`)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def schema_of(cls: type, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON-schema object of option group ``cls`` (without the fields in ``exclude``)."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in option_fields(cls):
        if f.name in exclude:
            continue
        meta = f.metadata
        prop = dict(meta["schema"]) if meta["schema"] else _type_schema(hints[f.name])
        prop.update(meta["bounds"])
        description = meta["help"] + (f" [{meta['unit']}]" if meta["unit"] else "")
        prop["description"] = description
        if f.default is not dataclasses.MISSING:
            prop["default"] = _jsonable(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = _jsonable(f.default_factory())
        else:
            required.append(f.name)
        properties[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = required
    return schema


def merge_schemas(*schemas: dict[str, Any]) -> dict[str, Any]:
    """One object schema with the properties of several groups (a config section that feeds several stages)."""
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}
    required: list[str] = []
    for schema in schemas:
        overlap = set(out["properties"]) & set(schema["properties"])
        if overlap:
            raise TypeError(f"option groups define {sorted(overlap)} twice")
        out["properties"].update(schema["properties"])
        required += schema.get("required", [])
    if required:
        out["required"] = required
    return out


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


# what the schema's patterns ask for, in words (the pattern itself for any other)
PATTERN_MEANING = {
    "^[0-9]+(\\.[0-9]+)?[KMBT]?$": "a token count such as 250K, 1.6M, 2B or 4096",
    "^[A-Za-z0-9][A-Za-z0-9_-]*$": "a simple name: letters, digits, _ and -, starting with a letter or digit",
    "^[A-Za-z0-9_.]+$": "a GRES name: letters, digits, _ and .",
    "^default$": "'default' or a whole number",
}


def describe(error: ValidationError, prefix: str = "") -> str:
    """One line for a schema error, naming the key (``prefix`` is the section, e.g. ``train``)."""
    path = [prefix] if prefix else []
    path += [str(p) for p in error.absolute_path]
    key = ".".join(path) or "<top level>"
    v, value = error.validator, error.instance
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        where = f"{key}.{unknown[0]}" if unknown and key != "<top level>" else (unknown[0] if unknown else key)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"config key '{where}': unknown key{hint}"
    if v == "type":
        return f"config key '{key}': expected {error.validator_value}, got {value!r}"
    if v in _BOUNDS:
        return f"config key '{key}': {value!r} is out of range ({v} {error.validator_value})"
    if v in ("minItems", "minProperties"):
        return f"config key '{key}': must not be empty"
    if v == "uniqueItems":
        return f"config key '{key}': has duplicate entries {value!r}"
    if v == "pattern":
        wanted = PATTERN_MEANING.get(error.validator_value, f"a value matching {error.validator_value}")
        return f"config key '{key}': {value!r} is not valid (expected {wanted})"
    if v == "enum":
        return f"config key '{key}': {value!r} is not one of {error.validator_value}"
    return f"config key '{key}': {error.message}"


def validate(instance: Any, schema: dict[str, Any], prefix: str = "") -> None:
    """Fill defaults into ``instance`` in place and raise a one-line UserError for the first violation."""
    error = best_match(DefaultingValidator(schema).iter_errors(instance))
    if error is not None:
        raise UserError(describe(error, prefix))


def from_mapping(cls: type[T], data: Mapping[str, Any], section: str, exclude: tuple[str, ...] = ()) -> T:
    """Validate ``data`` (only the group's own keys) against group ``cls`` and build it."""
    values = copy.deepcopy(dict(data))
    validate(values, schema_of(cls, exclude), section)
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if hints[name] is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)  # YAML writes 1 for 1.0; the group says float
    return cls(**values)


def pick(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that belong to option group ``cls`` (a config section feeding several groups)."""
    names = {f.name for f in option_fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def as_dict(group: Any) -> dict[str, Any]:
    """Plain JSON-able values of an option group (tuples as lists)."""
    return {f.name: _jsonable(getattr(group, f.name)) for f in dataclasses.fields(group)}


def to_json(group: Any) -> str:
    """Compact, key-sorted JSON of a group: what a rule passes to a stage (and hashes as a param)."""
    return json.dumps(as_dict(group), sort_keys=True, separators=(",", ":"))


def from_json(cls: type[T], text: str, flag: str) -> T:
    """Parse a group given on the command line (``--train JSON``); errors name the flag and key."""
    data = parse_json_object(text, flag)
    try:
        return from_mapping(cls, data, flag.lstrip("-"))
    except UserError as err:
        raise UserError(f"{flag}: {err}") from None


def check_bounds(group: Any, section: str) -> None:
    """Check a constructed group's fields against their declared bounds and choices (one-line errors)."""
    hints = typing.get_type_hints(type(group))
    for f in option_fields(type(group)):
        value = getattr(group, f.name)
        if typing.get_origin(hints[f.name]) is Literal and value not in typing.get_args(hints[f.name]):
            choices = ", ".join(map(str, typing.get_args(hints[f.name])))
            raise UserError(f"{section}.{f.name}: expected one of {choices}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        for bound, limit in f.metadata["bounds"].items():
            ok = {
                "minimum": value >= limit,
                "maximum": value <= limit,
                "exclusiveMinimum": value > limit,
                "exclusiveMaximum": value < limit,
            }[bound]
            if not ok or value != value:  # NaN fails every bound
                relation = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[bound]
                raise UserError(f"{section}.{f.name}: must be {relation} {limit}, got {value}")


def add_flags(parser: Any, cls: type) -> None:
    """One command-line flag per option of group ``cls`` (``max_tokens`` -> ``--max-tokens``), typed and documented."""
    hints = typing.get_type_hints(cls)
    for f in option_fields(cls):
        tp, flag = hints[f.name], "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"] + (f" [{f.metadata['unit']}]" if f.metadata["unit"] else "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if tp is bool:
            parser.add_argument(flag, action="store_true", default=default, help=help_text)
        elif typing.get_origin(tp) is Literal:
            parser.add_argument(flag, choices=typing.get_args(tp), default=default, help=help_text)
        elif tp in (int, float, str):
            parser.add_argument(
                flag,
                type=tp,
                default=default,
                required=default is None,
                help=f"{help_text} (default {default})" if default is not None else help_text,
            )
        else:
            raise TypeError(f"option {cls.__name__}.{f.name}: no command-line form for {tp!r}")


def from_flags(cls: type[T], args: Any) -> T:
    """The group ``cls`` from parsed flags (see :func:`add_flags`), validated like a config section."""
    values = {f.name: getattr(args, f.name) for f in option_fields(cls)}
    error = best_match(DefaultingValidator(schema_of(cls)).iter_errors(values))
    if error is not None:
        key = "--" + ".".join(str(p) for p in error.absolute_path).replace("_", "-")
        raise UserError(f"{key}: {error.message}")
    return cls(**values)
