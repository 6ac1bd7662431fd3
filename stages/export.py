"""Checkpoints to and from Hugging Face transformers (Qwen2 / Qwen2-MoE) and nanotron, as exact renames.

``python -m stages.export --checkpoint DIR --to hf|nanotron --out OUT``
``python -m stages.export --checkpoint SRC --from hf|nanotron --out DIR``

The model already computes Qwen2 / Qwen2-MoE math with Hugging Face parameter names, so an export
moves the same fp32 tensors (renamed, split, concatenated or transposed) and never trains or
approximates. What a format cannot express is a one-line error, never a silent change. Decisions:

Hugging Face (``config.json`` + ``model.safetensors``, loaded by ``AutoModelForCausalLM``):
- A dense model becomes ``Qwen2ForCausalLM``; an MoE model ``Qwen2MoeForCausalLM`` with
  ``decoder_sparse_step=1`` and the non-MoE layers in ``mlp_only_layers`` (any layer set fits).
- Qwen2 always has q/k/v biases: a dense model without them gets zero biases (exact). The import
  reads a dense model's ``qkv_bias`` from the weights (any non-zero bias); Qwen2-MoE has the flag.
- Qwen2-MoE always builds a shared expert: without ours it gets width 0, whose output is exactly zero.
  The import drops a shared expert of width 0 or with all-zero down projections (also exactly zero).
- Experts are written one module per expert (``mlp.experts.{e}.{gate,up,down}_proj.weight``), the
  layout transformers itself saves and 4.x loads (checked with 4.57 and 5.23); the import also reads
  the packed 3-D layout and sharded (``model.safetensors.index.json``) directories.
- The import refuses what the model cannot compute (other activations, sliding windows, scaled RoPE,
  a head_dim other than hidden_size / heads, an expert width that does not divide intermediate_size)
  and ignores ``attention_dropout`` (training-only).

nanotron (GitHub main's Qwen2; facts in reference/nanotron.md): ``model/`` with one safetensors file
per parameter holding the tensor ``data`` (q/k/v and gate/up fused, experts in x @ W layout), written
unsharded at tp=1/pp=1 with full-slice metadata so nanotron reshards it to any TP; ``model_config.json``;
and a ``config.yaml`` with the model section (``init_method.path`` = OUT) for the trainer to complete.
nanotron routes without renormalising the top-k weights, so ``norm_topk_prob`` must be false. The
import merges TP/PP shards using their slice metadata and ignores nanotron's output-logit z-loss
(training-only).

Both formats: the balancing coefficient is written as ``aux_loss_coef / top_k`` (Qwen2-MoE counts k
assignments per token where we count fractions, so the terms agree for one MoE layer; with several,
transformers averages the layers' statistics before the product, we average per-layer losses).
Token dropping (``capacity_factor > 0``) cannot be expressed (both are dropless): an error. The
router z-loss is training-only and not exported; an import sets it to 0. A tied ``lm_head`` is
stored once, as the embedding. Outputs are written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from stages.core.artifacts import atomic_path, read_json, replace_dir, sha256_file, write_json, write_text
from stages.model.checkpoint import load_model, load_weights, save_checkpoint, state_dict_for_saving
from stages.core.cli import ArgumentParser, UserError, run
from stages.core.codehash import code_hash
from stages.model.transformer import Transformer
from stages.model.config import ModelConfig, MoEConfig

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
NANOTRON_MODEL = "model"
NANOTRON_CONFIG = "model_config.json"
NANOTRON_YAML = "config.yaml"
NANOTRON_VERSION = "1.2"  # shard-metadata version that nanotron 0.4 and main both accept
_PER_EXPERT = re.compile(r"(.+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight")
_QKV_BIAS = re.compile(r".+\.self_attn\.[qkv]_proj\.bias")


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temporary sibling directory that replaces ``out`` only once everything in it is written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """``config.json`` of the Qwen2 (dense) or Qwen2-MoE model that computes the same function."""
    moe = cfg.moe
    if moe is not None and moe.capacity_factor > 0:
        raise UserError(f"moe.capacity_factor={moe.capacity_factor}: Hugging Face Qwen2-MoE is dropless and cannot "
                        "express token dropping; export a model trained with capacity_factor 0")
    out: dict[str, Any] = {
        "architectures": ["Qwen2MoeForCausalLM" if moe else "Qwen2ForCausalLM"],
        "model_type": "qwen2_moe" if moe else "qwen2",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "initializer_range": cfg.init_std,
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "rope_theta": float(cfg.rope_theta),  # transformers 4.x; 5.x reads rope_parameters
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
    }
    if moe is not None:
        sparse = set(cfg.moe_layers())
        out.update({
            "num_experts": moe.experts,
            "num_experts_per_tok": moe.top_k,
            "norm_topk_prob": moe.norm_topk_prob,
            "moe_intermediate_size": cfg.expert_d_ff,
            "shared_expert_intermediate_size": moe.shared_expert_d_ff,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [i for i in range(cfg.n_layer) if i not in sparse],
            "router_aux_loss_coef": moe.aux_loss_coef / moe.top_k,
            "output_router_logits": False,
            "qkv_bias": cfg.qkv_bias,
        })
    return out


def hf_state(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our tensors under Hugging Face names: experts split per expert, absent biases and shared experts zero."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith(".mlp.experts.gate_up_proj"):
            prefix = name.removesuffix("gate_up_proj")
            gate, up = tensor.chunk(2, dim=1)
            for e in range(tensor.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = gate[e].contiguous()
                out[f"{prefix}{e}.up_proj.weight"] = up[e].contiguous()
        elif name.endswith(".mlp.experts.down_proj"):
            prefix = name.removesuffix("down_proj")
            for e in range(tensor.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = tensor[e].contiguous()
        else:
            out[name] = tensor
    d, kv = cfg.d_model, cfg.n_kv_head * cfg.head_dim
    for i in range(cfg.n_layer):
        layer = f"model.layers.{i}"
        if cfg.moe is None and not cfg.qkv_bias:
            for proj, width in (("q", cfg.n_head * cfg.head_dim), ("k", kv), ("v", kv)):
                out[f"{layer}.self_attn.{proj}_proj.bias"] = torch.zeros(width)
        if cfg.moe is not None and cfg.moe.shared_expert_d_ff == 0 and i in cfg.moe_layers():
            out[f"{layer}.mlp.shared_expert.gate_proj.weight"] = torch.zeros(0, d)
            out[f"{layer}.mlp.shared_expert.up_proj.weight"] = torch.zeros(0, d)
            out[f"{layer}.mlp.shared_expert.down_proj.weight"] = torch.zeros(d, 0)
            out[f"{layer}.mlp.shared_expert_gate.weight"] = torch.zeros(1, d)
    return out


def export_hf(checkpoint: Path, out: Path) -> None:
    """Write ``config.json`` + ``model.safetensors`` that ``AutoModelForCausalLM.from_pretrained`` loads."""
    model, _ = load_model(checkpoint)
    config = hf_config(model.cfg)
    tensors = hf_state(model.cfg, state_dict_for_saving(model))
    with staged_dir(out) as tmp:
        write_json(tmp / HF_CONFIG, config)
        with atomic_path(tmp / HF_WEIGHTS) as path:
            save_file(tensors, str(path), metadata={"format": "pt"})  # one key: safetensors orders keys at random


def _require(hf: dict[str, Any], key: str, where: Path) -> Any:
    if key not in hf:
        raise UserError(f"{where}: missing key {key!r}")
    return hf[key]


def _nonzero(tensors: dict[str, torch.Tensor], names: Sequence[str]) -> bool:
    """Whether any named tensor has a non-zero entry (a missing one counts as non-zero: the load names it)."""
    return any(name not in tensors or bool(tensors[name].any()) for name in names)


def config_from_hf(hf: dict[str, Any], tensors: dict[str, torch.Tensor], where: Path) -> ModelConfig:
    """Our config for a Qwen2 / Qwen2-MoE ``config.json``; refuses what our model cannot compute."""
    model_type = hf.get("model_type")
    if model_type not in ("qwen2", "qwen2_moe"):
        raise UserError(f"{where}: model_type {model_type!r} is not qwen2 or qwen2_moe")
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported (SwiGLU needs silu)")
    if hf.get("use_sliding_window"):
        raise UserError(f"{where}: use_sliding_window is true; sliding-window attention is not supported")
    rope = hf.get("rope_parameters") or {}
    if hf.get("rope_scaling") or rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UserError(f"{where}: rope_parameters: only the default (unscaled) RoPE is supported")
    d_model, n_head = _require(hf, "hidden_size", where), _require(hf, "num_attention_heads", where)
    if hf.get("head_dim") not in (None, d_model // n_head):
        raise UserError(f"{where}: head_dim {hf['head_dim']} is not hidden_size / num_attention_heads")
    n_layer, d_ff = _require(hf, "num_hidden_layers", where), _require(hf, "intermediate_size", where)
    layers = [f"model.layers.{i}" for i in range(n_layer)]
    moe = None
    if model_type == "qwen2_moe":
        qkv_bias = bool(hf.get("qkv_bias", True))
        experts, top_k = _require(hf, "num_experts", where), _require(hf, "num_experts_per_tok", where)
        width = _require(hf, "moe_intermediate_size", where)
        shared = _require(hf, "shared_expert_intermediate_size", where)
        step, dense = hf.get("decoder_sparse_step", 1), set(hf.get("mlp_only_layers") or [])
        sparse = [i for i in range(n_layer) if i not in dense and experts > 0 and (i + 1) % step == 0]
        if sparse:
            if width <= 0 or d_ff % width:
                raise UserError(f"{where}: moe_intermediate_size {width} does not divide intermediate_size {d_ff} "
                                "(expert width must be d_ff / granularity)")
            if shared and not _nonzero(tensors, [f"{layers[i]}.mlp.shared_expert.down_proj.weight" for i in sparse]):
                shared = 0
            moe = MoEConfig(
                experts=experts, top_k=top_k, granularity=d_ff // width, norm_topk_prob=bool(hf.get("norm_topk_prob")),
                layers=None if len(sparse) == n_layer else tuple(sparse), shared_expert_d_ff=shared,
                aux_loss_coef=hf.get("router_aux_loss_coef", 0.001) * top_k,
            )
    else:
        qkv_bias = _nonzero(tensors, [f"{p}.self_attn.{x}_proj.bias" for p in layers for x in "qkv"])
    rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    try:
        return ModelConfig(
            vocab_size=_require(hf, "vocab_size", where), n_layer=n_layer, d_model=d_model, n_head=n_head, d_ff=d_ff,
            n_kv_head=hf.get("num_key_value_heads") or n_head, max_seq_len=hf.get("max_position_embeddings", 32768),
            rope_theta=float(rope_theta), norm_eps=hf.get("rms_norm_eps", 1e-6), qkv_bias=qkv_bias,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)), init_std=hf.get("initializer_range", 0.02),
            moe=moe,
        )
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def state_from_hf(cfg: ModelConfig, tensors: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """Hugging Face tensors under our names (fp32), experts packed, exactly-zero extras dropped."""
    state: dict[str, torch.Tensor] = {}
    per_expert: dict[str, dict[tuple[int, str], torch.Tensor]] = {}
    no_shared = cfg.moe is None or cfg.moe.shared_expert_d_ff == 0
    for name, tensor in tensors.items():
        if (name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and cfg.tie_embeddings)
                or (not cfg.qkv_bias and _QKV_BIAS.fullmatch(name)) or (no_shared and ".mlp.shared_expert" in name)):
            continue
        if match := _PER_EXPERT.fullmatch(name):
            per_expert.setdefault(match[1], {})[int(match[2]), match[3]] = tensor
        else:
            state[name] = tensor
    for prefix, parts in per_expert.items():
        n = 1 + max(e for e, _ in parts)
        names = [(e, p) for e in range(n) for p in ("gate", "up", "down")]
        missing = [f"{prefix}.{e}.{p}_proj.weight" for e, p in names if (e, p) not in parts]
        if missing:
            raise UserError(f"{where}: missing tensor {missing[0]!r}")
        state[f"{prefix}.gate_up_proj"] = torch.stack([torch.cat([parts[e, "gate"], parts[e, "up"]]) for e in range(n)])
        state[f"{prefix}.down_proj"] = torch.stack([parts[e, "down"] for e in range(n)])
    return {name: tensor.float().contiguous() for name, tensor in state.items()}


def read_hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a single-file or sharded safetensors model, and the sha256 of each file read."""
    if (directory / HF_WEIGHTS).exists():
        files = [HF_WEIGHTS]
    elif (directory / HF_INDEX).exists():
        index = read_json(directory / HF_INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise UserError(f"{directory / HF_INDEX}: no weight_map object")
        files = sorted(set(weight_map.values()))
    else:
        raise UserError(f"{directory}: no {HF_WEIGHTS} or {HF_INDEX} (only safetensors weights are read)")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_weights(directory / name))
    return tensors, {name: sha256_file(directory / name) for name in files}


def checked_model(cfg: ModelConfig, state: dict[str, torch.Tensor], where: Path) -> Transformer:
    """Our model holding ``state``, after checking that names and shapes are exactly the config's."""
    model = Transformer(cfg)
    expected = state_dict_for_saving(model)
    for name in sorted(set(expected) | set(state)):
        if name not in state:
            raise UserError(f"{where}: missing tensor {name!r}")
        if name not in expected:
            raise UserError(f"{where}: unexpected tensor {name!r} for the model its config describes")
        if state[name].shape != expected[name].shape:
            raise UserError(f"{where}: {name} has shape {tuple(state[name].shape)}, "
                            f"config implies {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=not cfg.tie_embeddings)
    return model


def save_import(model: Transformer, out: Path, fmt: str, source: Path, shas: dict[str, str]) -> None:
    """Write an imported model as our checkpoint; the provenance names the source files and their sha256."""
    provenance = {
        "run_id": str(out),
        "kind": "import",
        "source": {"format": fmt, "path": str(source), "sha256": shas},
        "code_hash": code_hash("export"),
        "torch_version": torch.__version__,
    }
    with staged_dir(out) as tmp:
        save_checkpoint(tmp, model, provenance)


def import_hf(directory: Path, out: Path) -> None:
    """Read a Qwen2 / Qwen2-MoE directory (single-file or sharded safetensors) into our checkpoint format."""
    hf = read_json(directory / HF_CONFIG)
    if not isinstance(hf, dict):
        raise UserError(f"{directory / HF_CONFIG}: expected a JSON object")
    tensors, shas = read_hf_weights(directory)
    cfg = config_from_hf(hf, tensors, directory / HF_CONFIG)
    model = checked_model(cfg, state_from_hf(cfg, tensors, directory), directory)
    shas[HF_CONFIG] = sha256_file(directory / HF_CONFIG)
    save_import(model, out, "hf", directory, shas)


@dataclass(frozen=True)
class NanotronParam:
    """One nanotron parameter: our tensors concatenated along dim 0, transposed for nanotron's x @ W experts."""

    name: str
    ours: tuple[str, ...]
    sharded: bool  # TP-sharded in nanotron: rank suffix in the file name and slice metadata
    transpose: bool = False


def nanotron_params(cfg: ModelConfig) -> list[NanotronParam]:
    """Every parameter of nanotron's Qwen2 (tp=1, pp=1) for this config, with the tensors it holds."""
    params = [NanotronParam("model.token_position_embeddings.pp_block.token_embedding.weight",
                            ("model.embed_tokens.weight",), True)]
    moe_layers = cfg.moe_layers()
    for i in range(cfg.n_layer):
        ours, theirs = f"model.layers.{i}", f"model.decoder.{i}.pp_block"
        qkv = tuple(f"{ours}.self_attn.{x}_proj" for x in "qkv")
        params += [
            NanotronParam(f"{theirs}.input_layernorm.weight", (f"{ours}.input_layernorm.weight",), False),
            NanotronParam(f"{theirs}.attn.qkv_proj.weight", tuple(f"{p}.weight" for p in qkv), True),
            NanotronParam(f"{theirs}.attn.o_proj.weight", (f"{ours}.self_attn.o_proj.weight",), True),
            NanotronParam(f"{theirs}.post_attention_layernorm.weight", (f"{ours}.post_attention_layernorm.weight",),
                          False),
        ]
        if cfg.qkv_bias:
            params.append(NanotronParam(f"{theirs}.attn.qkv_proj.bias", tuple(f"{p}.bias" for p in qkv), True))
        mlp, their_mlp = f"{ours}.mlp", f"{theirs}.mlp"
        if i not in moe_layers:
            params += [
                NanotronParam(f"{their_mlp}.gate_up_proj.weight", (f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight"),
                              True),
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
                NanotronParam(f"{their_mlp}.shared_expert.gate_up_proj.weight",
                              (f"{shared}.gate_proj.weight", f"{shared}.up_proj.weight"), True),
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


def nanotron_model_config(cfg: ModelConfig) -> dict[str, Any]:
    """nanotron ``Qwen2Config`` fields for this model (the rest keep nanotron's defaults)."""
    moe = cfg.moe
    if moe is not None and moe.capacity_factor > 0:
        raise UserError(f"moe.capacity_factor={moe.capacity_factor}: nanotron's MoE is dropless and cannot express "
                        "token dropping; export a model trained with capacity_factor 0")
    if moe is not None and moe.norm_topk_prob:
        raise UserError("moe.norm_topk_prob=true: nanotron's Qwen2 MoE does not renormalise the top-k weights; "
                        "only models with norm_topk_prob false can be exported to nanotron")
    out: dict[str, Any] = {
        "is_qwen2_config": True,
        "hidden_act": "silu",
        "hidden_size": cfg.d_model,
        "initializer_range": cfg.init_std,
        "intermediate_size": cfg.d_ff,
        "max_position_embeddings": cfg.max_seq_len,
        "num_attention_heads": cfg.n_head,
        "num_hidden_layers": cfg.n_layer,
        "num_key_value_heads": cfg.n_kv_head,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": float(cfg.rope_theta),
        "rope_interleaved": False,
        "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "vocab_size": cfg.vocab_size,
        "attention_bias": cfg.qkv_bias,
        "moe_config": None,
    }
    if moe is not None:
        out["moe_config"] = {
            "num_experts": moe.experts,
            "top_k": moe.top_k,
            "moe_intermediate_size": cfg.expert_d_ff,
            "shared_expert_intermediate_size": moe.shared_expert_d_ff,
            "enable_shared_expert": moe.shared_expert_d_ff > 0,
            "layers": list(cfg.moe_layers()),
            "router_aux_loss_coef": moe.aux_loss_coef / moe.top_k,
        }
    return out


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
    model_config = nanotron_model_config(model.cfg)
    state = state_dict_for_saving(model)
    with staged_dir(out) as tmp:
        for param in nanotron_params(model.cfg):
            tensor = torch.cat([state[name] for name in param.ours])
            if param.transpose:
                tensor = tensor.transpose(1, 2)
            metadata = {}
            if param.sharded:
                metadata = {"version": NANOTRON_VERSION, "local_global_slices_pairs": _full_slices(tensor.ndim),
                            "unsharded_shape": str(tuple(tensor.shape))}
            path = nanotron_path(tmp, param.name, param.sharded)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_data_file(tensor, path, metadata)
        write_json(tmp / NANOTRON_CONFIG, model_config)
        run_config = {
            "general": {"project": "moe_upcycling", "run": out.name},
            "parallelism": {"dp": 1, "pp": 1, "tp": 1, "expert_parallel_size": 1},
            "model": {"init_method": {"path": str(out.resolve())}, "make_vocab_size_divisible_by": 1,
                      "model_config": model_config},
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
    n_layer, d_ff = _require(nt, "num_hidden_layers", where), _require(nt, "intermediate_size", where)
    n_head = _require(nt, "num_attention_heads", where)
    moe, moe_nt = None, nt.get("moe_config")
    if moe_nt:
        layers = sorted(set(range(n_layer) if -1 in moe_nt.get("layers", [-1]) else moe_nt["layers"]))
        width, top_k = _require(moe_nt, "moe_intermediate_size", where), _require(moe_nt, "top_k", where)
        if width <= 0 or d_ff % width:
            raise UserError(f"{where}: moe_intermediate_size {width} does not divide intermediate_size {d_ff} "
                            "(expert width must be d_ff / granularity)")
        shared = _require(moe_nt, "shared_expert_intermediate_size", where) if moe_nt.get("enable_shared_expert") else 0
        moe = MoEConfig(
            experts=_require(moe_nt, "num_experts", where), top_k=top_k, granularity=d_ff // width,
            layers=None if layers == list(range(n_layer)) else tuple(layers), shared_expert_d_ff=shared,
            aux_loss_coef=moe_nt.get("router_aux_loss_coef", 0.01) * top_k,
        )
    try:
        return ModelConfig(
            vocab_size=_require(nt, "vocab_size", where), n_layer=n_layer, d_model=_require(nt, "hidden_size", where),
            n_head=n_head, d_ff=d_ff, n_kv_head=nt.get("num_key_value_heads") or n_head,
            max_seq_len=nt.get("max_position_embeddings", 2048), rope_theta=float(nt.get("rope_theta", 10000.0)),
            norm_eps=nt.get("rms_norm_eps", 1e-6), qkv_bias=bool(nt.get("attention_bias", False)),
            tie_embeddings=bool(nt.get("tie_word_embeddings", False)), init_std=nt.get("initializer_range", 0.02),
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
            raise UserError(f"{path}: missing or inconsistent shard metadata (unsharded_shape, "
                            "local_global_slices_pairs)") from None
    if covered is None or not bool(covered.all()):
        raise UserError(f"{single.parent}: the shards of {param.name} do not cover its unsharded shape")
    return full, shards


def import_nanotron(directory: Path, out: Path) -> None:
    """Read a nanotron Qwen2 checkpoint (any TP/PP sharding) into our checkpoint format."""
    nt = read_json(directory / NANOTRON_CONFIG)
    if not isinstance(nt, dict):
        raise UserError(f"{directory / NANOTRON_CONFIG}: expected a JSON object")
    cfg = config_from_nanotron(nt, directory / NANOTRON_CONFIG)
    expected = state_dict_for_saving(Transformer(cfg))
    state, shas = {}, {NANOTRON_CONFIG: sha256_file(directory / NANOTRON_CONFIG)}
    for param in nanotron_params(cfg):
        tensor, files = read_nanotron_param(directory, param)
        shas.update({str(f.relative_to(directory)): sha256_file(f) for f in files})
        if param.transpose:
            tensor = tensor.transpose(1, 2)
        sizes = [expected[name].shape[0] for name in param.ours]
        if tensor.shape[0] != sum(sizes):
            raise UserError(f"{files[0]}: {param.name} has shape {tuple(tensor.shape)}, which does not match "
                            f"{directory / NANOTRON_CONFIG}")
        state.update({name: part.float().contiguous() for name, part in zip(param.ours, tensor.split(sizes),
                                                                          strict=True)})
    save_import(checked_model(cfg, state, directory), out, "nanotron", directory, shas)


FORMATS = {"hf": (export_hf, import_hf), "nanotron": (export_nanotron, import_nanotron)}


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m stages.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory to read (ours, or --from's format)")
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=sorted(FORMATS), help="write our checkpoint in this format")
    direction.add_argument("--from", dest="source", choices=sorted(FORMATS), help="read a checkpoint in this format")
    p.add_argument("--out", required=True, help="directory to write (replaced atomically)")
    args = p.parse_args(argv)
    checkpoint, out = Path(args.checkpoint), Path(args.out)
    if not checkpoint.is_dir():
        raise UserError(f"--checkpoint {checkpoint}: not a directory")
    export, import_ = FORMATS[args.to or args.source]
    if args.to:
        export(checkpoint, out)
    else:
        import_(checkpoint, out)
    what = f"exported to {args.to}" if args.to else f"imported from {args.source}"
    print(f"{out}: {what} ({checkpoint})")


if __name__ == "__main__":
    run(main)
