"""nanotron checkpoints (GitHub main's Qwen2) to and from ours, as exact renames of the same fp32 tensors.

An export writes ``model/`` with one safetensors file per parameter holding the tensor ``data`` (q/k/v
and gate/up fused, experts in x @ W layout), unsharded at tp=1/pp=1 with full-slice metadata so nanotron
reshards it to any TP; ``model_config.json``; and a ``config.yaml`` with the model section
(``init_method.path`` = OUT) for the trainer to complete. nanotron routes without renormalising the
top-k weights, so ``norm_topk_prob`` must be false, and its MoE is dropless, so ``capacity_factor > 0``
is an error. The balancing coefficient is written as ``aux_loss_coef / top_k``, as for Hugging Face
(``stages.interop.hf``). A muP model is folded into the SP model computing the same function, as for
Hugging Face (:func:`stages.model.parametrization.fold_for_export`). The import merges TP/PP shards using
their slice metadata and ignores nanotron's output-logit z-loss (training-only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from stages.core.artifacts import read_json, sha256_file, write_json, write_text
from stages.core.cli import UserError
from stages.interop.common import require, save_import, staged_dir
from stages.interop.nanotron_config import nanotron_model_config as nanotron_model_config  # torch-free
from stages.model.checkpoint import checked_model, load_model, load_weights, state_dict_for_saving
from stages.model.config import ModelConfig, MoEConfig
from stages.model.parametrization import fold_for_export
from stages.model.transformer import Transformer

NANOTRON_MODEL = "model"
NANOTRON_CONFIG = "model_config.json"
NANOTRON_YAML = "config.yaml"
NANOTRON_VERSION = "1.2"  # shard-metadata version that nanotron 0.4 and main both accept


@dataclass(frozen=True)
class NanotronParam:
    """One nanotron parameter: our tensors concatenated along dim 0, transposed for nanotron's x @ W experts."""

    name: str
    ours: tuple[str, ...]
    sharded: bool  # TP-sharded in nanotron: rank suffix in the file name and slice metadata
    transpose: bool = False


def nanotron_params(cfg: ModelConfig) -> list[NanotronParam]:
    """Every parameter of nanotron's Qwen2 (tp=1, pp=1) for this config, with the tensors it holds."""
    params = [
        NanotronParam(
            "model.token_position_embeddings.pp_block.token_embedding.weight", ("model.embed_tokens.weight",), True
        )
    ]
    moe_layers = cfg.moe_layers()
    for i in range(cfg.n_layer):
        ours, theirs = f"model.layers.{i}", f"model.decoder.{i}.pp_block"
        qkv = tuple(f"{ours}.self_attn.{x}_proj" for x in "qkv")
        params += [
            NanotronParam(f"{theirs}.input_layernorm.weight", (f"{ours}.input_layernorm.weight",), False),
            NanotronParam(f"{theirs}.attn.qkv_proj.weight", tuple(f"{p}.weight" for p in qkv), True),
            NanotronParam(f"{theirs}.attn.o_proj.weight", (f"{ours}.self_attn.o_proj.weight",), True),
            NanotronParam(
                f"{theirs}.post_attention_layernorm.weight", (f"{ours}.post_attention_layernorm.weight",), False
            ),
        ]
        if cfg.qkv_bias:
            params.append(NanotronParam(f"{theirs}.attn.qkv_proj.bias", tuple(f"{p}.bias" for p in qkv), True))
        mlp, their_mlp = f"{ours}.mlp", f"{theirs}.mlp"
        if i not in moe_layers:
            params += [
                NanotronParam(
                    f"{their_mlp}.gate_up_proj.weight", (f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight"), True
                ),
                NanotronParam(f"{their_mlp}.down_proj.weight", (f"{mlp}.down_proj.weight",), True),
            ]
            continue
        params += [
            NanotronParam(f"{their_mlp}.router.weight", (f"{mlp}.gate.weight",), False),
            NanotronParam(f"{their_mlp}.experts.merged_gate_up_proj", (f"{mlp}.experts.gate_up_proj",), False, True),
            NanotronParam(f"{their_mlp}.experts.merged_down_proj", (f"{mlp}.experts.down_proj",), False, True),
        ]
        if cfg.moe is not None and cfg.moe.shared_expert_d_ff:
            shared = f"{mlp}.shared_expert"
            params += [
                NanotronParam(
                    f"{their_mlp}.shared_expert.gate_up_proj.weight",
                    (f"{shared}.gate_proj.weight", f"{shared}.up_proj.weight"),
                    True,
                ),
                NanotronParam(f"{their_mlp}.shared_expert.down_proj.weight", (f"{shared}.down_proj.weight",), True),
                NanotronParam(f"{their_mlp}.shared_expert_gate.weight", (f"{mlp}.shared_expert_gate.weight",), False),
            ]
    params.append(NanotronParam("model.final_layer_norm.pp_block.weight", ("model.norm.weight",), False))
    if not cfg.tie_embeddings:
        params.append(NanotronParam("model.lm_head.pp_block.weight", ("lm_head.weight",), True))
    return params


def nanotron_path(root: Path, name: str, sharded: bool) -> Path:
    """nanotron's file for an unsharded (tp=1, pp=1) parameter: one folder per module, ``model_<leaf>``."""
    *folders, leaf = name.split(".")
    suffix = "_pp-rank-0-of-1_tp-rank-0-of-1" if sharded else ""
    return root.joinpath(NANOTRON_MODEL, *folders, f"model_{leaf}{suffix}.safetensors")


def _full_slices(ndim: int) -> str:
    whole = "|".join(["None,None,None"] * ndim)
    return f"{whole}#{whole}"


def save_data_file(tensor: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    """One tensor named ``data``; the metadata keys are sorted in place so the bytes are reproducible.

    safetensors writes metadata in hash-map order, different on every call; the header is re-serialised
    with the same compact JSON and sorted metadata, which has the same length.
    """
    save_file({"data": tensor.contiguous()}, str(path), metadata=metadata)
    if len(metadata) < 2:
        return
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        f.seek(8)
        f.write(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode().ljust(size))


def export_nanotron(checkpoint: Path, out: Path) -> None:
    """Write nanotron's checkpoint layout (``model/``, ``model_config.json``) and a ``config.yaml`` that loads it."""
    model, _ = load_model(checkpoint)
    write_nanotron_model(model, out)


def write_nanotron_model(model: Transformer, out: Path, routed: bool = False) -> None:
    """``model`` in nanotron's layout at ``out`` (replaced atomically): the export, and a nanotron run's init
    (``routed``: for the backend's model class, which routes as ours; see ``nanotron_model_config``)."""
    model_config = nanotron_model_config(model.cfg, routed)
    state = fold_for_export(model.cfg, state_dict_for_saving(model), "nanotron")
    with staged_dir(out) as tmp:
        for param in nanotron_params(model.cfg):
            tensor = torch.cat([state[name] for name in param.ours])
            if param.transpose:
                tensor = tensor.transpose(1, 2)
            metadata = {}
            if param.sharded:
                metadata = {
                    "version": NANOTRON_VERSION,
                    "local_global_slices_pairs": _full_slices(tensor.ndim),
                    "unsharded_shape": str(tuple(tensor.shape)),
                }
            path = nanotron_path(tmp, param.name, param.sharded)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_data_file(tensor, path, metadata)
        write_json(tmp / NANOTRON_CONFIG, model_config)
        run_config = {
            "general": {"project": "moe_upcycling", "run": out.name},
            "parallelism": {"dp": 1, "pp": 1, "tp": 1, "expert_parallel_size": 1},
            "model": {
                "init_method": {"path": str(out.resolve())},
                "make_vocab_size_divisible_by": 1,
                "model_config": model_config,
            },
        }
        write_text(tmp / NANOTRON_YAML, yaml.safe_dump(run_config, sort_keys=True))


def config_from_nanotron(nt: dict[str, Any], where: Path) -> ModelConfig:
    """Our config for a nanotron ``Qwen2Config`` dict; refuses what our model cannot compute."""
    if nt.get("hidden_act", "silu") != "silu":
        raise UserError(f"{where}: hidden_act {nt['hidden_act']!r} is not supported (SwiGLU needs silu)")
    for key in ("rope_scaling", "rope_seq_len_interpolation_factor", "sliding_window_size", "no_rope_layer"):
        if nt.get(key) is not None:
            raise UserError(f"{where}: {key} is set; our model has plain RoPE on full causal attention")
    if nt.get("rope_interleaved"):
        raise UserError(f"{where}: rope_interleaved is true; our model uses the rotate_half RoPE layout")
    n_layer, d_ff = require(nt, "num_hidden_layers", where), require(nt, "intermediate_size", where)
    n_head = require(nt, "num_attention_heads", where)
    moe, moe_nt = None, nt.get("moe_config")
    if moe_nt:
        layers = sorted(set(range(n_layer) if -1 in moe_nt.get("layers", [-1]) else moe_nt["layers"]))
        width, top_k = require(moe_nt, "moe_intermediate_size", where), require(moe_nt, "top_k", where)
        if width <= 0 or d_ff % width:
            raise UserError(
                f"{where}: moe_intermediate_size {width} does not divide intermediate_size {d_ff} "
                "(expert width must be d_ff / granularity)"
            )
        shared = require(moe_nt, "shared_expert_intermediate_size", where) if moe_nt.get("enable_shared_expert") else 0
        moe = MoEConfig(
            experts=require(moe_nt, "num_experts", where),
            top_k=top_k,
            granularity=d_ff // width,
            layers=None if layers == list(range(n_layer)) else tuple(layers),
            shared_expert_d_ff=shared,
            aux_loss_coef=moe_nt.get("router_aux_loss_coef", 0.01) * top_k,
        )
    try:
        return ModelConfig(
            vocab_size=require(nt, "vocab_size", where),
            n_layer=n_layer,
            d_model=require(nt, "hidden_size", where),
            n_head=n_head,
            d_ff=d_ff,
            n_kv_head=nt.get("num_key_value_heads") or n_head,
            max_seq_len=nt.get("max_position_embeddings", 2048),
            rope_theta=float(nt.get("rope_theta", 10000.0)),
            norm_eps=nt.get("rms_norm_eps", 1e-6),
            qkv_bias=bool(nt.get("attention_bias", False)),
            tie_embeddings=bool(nt.get("tie_word_embeddings", False)),
            init_std=nt.get("initializer_range", 0.02),
            moe=moe,
        )
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def _slices(text: str) -> tuple[slice, ...]:
    return tuple(slice(*(None if x == "None" else int(x) for x in dim.split(","))) for dim in text.split("|"))


def read_nanotron_param(root: Path, param: NanotronParam) -> tuple[torch.Tensor, list[Path]]:
    """One parameter, merged from its TP/PP shard files with their slice metadata where it was sharded."""
    single = nanotron_path(root, param.name, sharded=False)
    if single.exists():
        return load_weights(single)["data"], [single]
    shards = sorted(single.parent.glob(f"{single.stem}_pp-rank-*.safetensors"))
    if not shards:
        raise UserError(f"{single.parent}: no {single.name} or {single.stem}_pp-rank-* shards for {param.name}")
    full, covered = None, None
    for path in shards:
        shard = load_weights(path)["data"]
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        try:
            shape = tuple(int(x) for x in meta["unsharded_shape"].strip("()").split(",") if x.strip())
            pairs = [tuple(map(_slices, pair.split("#"))) for pair in meta["local_global_slices_pairs"].split(";")]
            if full is None:
                full, covered = shard.new_zeros(shape), torch.zeros(shape, dtype=torch.bool)
            for local, whole in pairs:
                full[whole] = shard[local]
                covered[whole] = True
        except (KeyError, ValueError, IndexError, RuntimeError):
            raise UserError(
                f"{path}: missing or inconsistent shard metadata (unsharded_shape, local_global_slices_pairs)"
            ) from None
    if covered is None or not bool(covered.all()):
        raise UserError(f"{single.parent}: the shards of {param.name} do not cover its unsharded shape")
    return full, shards


def read_nanotron_state(directory: Path, cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Our fp32 state dict of a nanotron Qwen2 checkpoint of shape ``cfg`` and the sha256 of every file read."""
    expected = state_dict_for_saving(Transformer(cfg))
    state, shas = {}, {}
    for param in nanotron_params(cfg):
        tensor, files = read_nanotron_param(directory, param)
        shas.update({str(f.relative_to(directory)): sha256_file(f) for f in files})
        if param.transpose:
            tensor = tensor.transpose(1, 2)
        sizes = [expected[name].shape[0] for name in param.ours]
        if tensor.shape[0] != sum(sizes):
            raise UserError(
                f"{files[0]}: {param.name} has shape {tuple(tensor.shape)}, which does not match the model config"
            )
        state.update(
            {name: part.float().contiguous() for name, part in zip(param.ours, tensor.split(sizes), strict=True)}
        )
    return state, shas


def import_nanotron(directory: Path, out: Path) -> None:
    """Read a nanotron Qwen2 checkpoint (any TP/PP sharding) into our checkpoint format."""
    nt = read_json(directory / NANOTRON_CONFIG)
    if not isinstance(nt, dict):
        raise UserError(f"{directory / NANOTRON_CONFIG}: expected a JSON object")
    cfg = config_from_nanotron(nt, directory / NANOTRON_CONFIG)
    state, shas = read_nanotron_state(directory, cfg)
    shas[NANOTRON_CONFIG] = sha256_file(directory / NANOTRON_CONFIG)
    model = checked_model(cfg, state, directory / NANOTRON_CONFIG, directory / NANOTRON_MODEL)
    save_import(model, out, "nanotron", directory, shas)
