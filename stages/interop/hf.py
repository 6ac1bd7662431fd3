"""Hugging Face transformers checkpoints (``config.json`` + ``model.safetensors``, loaded by
``AutoModelForCausalLM``) to and from ours, as exact renames of the same fp32 tensors.

- A dense model becomes ``Qwen2ForCausalLM``; an MoE model ``Qwen2MoeForCausalLM`` with
  ``decoder_sparse_step=1`` and the non-MoE layers in ``mlp_only_layers`` (any layer set fits).
- Qwen2 always has q/k/v biases: a dense model without them gets zero biases (exact). The import
  reads a dense model's ``qkv_bias`` from the weights (any non-zero bias); Qwen2-MoE has the flag.
- Qwen2-MoE always builds a shared expert: without ours it gets width 0, whose output is exactly zero.
  The import drops a shared expert of width 0 or with all-zero down projections (also exactly zero).
- Experts are written one module per expert (``mlp.experts.{e}.{gate,up,down}_proj.weight``), the
  layout transformers itself saves and 4.x loads (checked with 4.57 and 5.23); the import also reads
  the packed 3-D layout and sharded (``model.safetensors.index.json``) directories.
- The import also reads dense Llama and Mistral directories (the same names and math; Qwen2-style
  q/k/v biases only where Qwen2 has them), and ``pytorch_model.bin`` weights (single or sharded, loaded
  with ``weights_only``). It refuses what the model cannot compute (other activations, a sliding window
  shorter than the context, scaled RoPE, a head_dim other than hidden_size / heads, Llama's
  attention/mlp biases, an expert width that does not divide intermediate_size; see
  ``stages.interop.hf_config``) and ignores ``attention_dropout`` (training-only). Its context length is
  ``max_position_embeddings`` unless given (a workflow imports at its training sequence length).
- The balancing coefficient is written as ``aux_loss_coef / top_k``: Qwen2-MoE counts k assignments
  per token where we count fractions, so the terms agree for one MoE layer; with several, transformers
  averages the layers' statistics before the product, we average per-layer losses.
- Token dropping (``capacity_factor > 0``) cannot be expressed (Qwen2-MoE is dropless): an error.
- A muP model is written as the SP model computing the same function: its attention scale is folded into
  ``q_proj`` and its 1/m logit multiplier into an untied ``lm_head``; a tied head cannot hold the multiplier
  (an error unless d_model is the base width). See :func:`stages.model.parametrization.fold_for_export`.
  The import reads every model as SP.
- The export carries what ``AutoTokenizer`` and ``generate`` need: the corpus ``tokenizer.json`` the
  checkpoint was trained with (byte for byte; found beside the run record's ``data.manifest`` and checked
  against ``data.tokenizer_sha256``, or given with ``--tokenizer``), a ``tokenizer_config.json``
  (``PreTrainedTokenizerFast``) and a ``generation_config.json`` (greedy). Our only special token, the
  end-of-text token, is eos, bos and pad, also in ``config.json``. Without a tokenizer the export is an
  error (see :func:`tokenizer_source`). The import records the sha256 of a ``tokenizer.json`` beside the
  weights (the tokenizer a child run's corpus must have been tokenized with) and ignores the other files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from stages.core.artifacts import atomic_path, sha256_file, write_bytes, write_json
from stages.core.cli import UserError
from stages.core.record import RunRecord
from stages.corpus.tokenizer import EOT
from stages.interop.common import save_import, staged_dir
from stages.interop.hf_config import (
    base_config,
    check_computable,
    context_of,
    dense_config,
    integer,
    model_type,
    read_config,
    real,
    weight_files,
)
from stages.model.checkpoint import checked_model, load_model, load_weights, state_dict_for_saving
from stages.model.config import ModelConfig, MoEConfig
from stages.model.parametrization import fold_for_export

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_TOKENIZER = "tokenizer.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_GENERATION = "generation_config.json"
_PER_EXPERT = re.compile(r"(.+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight")
_QKV_BIAS = re.compile(r".+\.self_attn\.[qkv]_proj\.bias")


def hf_config(cfg: ModelConfig, eot_id: int | None = None) -> dict[str, Any]:
    """``config.json`` of the Qwen2 (dense) or Qwen2-MoE model that computes the same function; with the
    tokenizer's end-of-text id as its bos, eos and pad token ids when given."""
    moe = cfg.moe
    if moe is not None and moe.capacity_factor > 0:
        raise UserError(
            f"moe.capacity_factor={moe.capacity_factor}: Hugging Face Qwen2-MoE is dropless and cannot "
            "express token dropping; export a model trained with capacity_factor 0"
        )
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
    if eot_id is not None:
        out.update(special_token_ids(eot_id))
    if moe is not None:
        sparse = set(cfg.moe_layers())
        out.update(
            {
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
            }
        )
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


def special_token_ids(eot_id: int) -> dict[str, int]:
    """bos, eos and pad are all the end-of-text token (see :func:`tokenizer_config`)."""
    return {"bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": eot_id}


def tokenizer_config(cfg: ModelConfig) -> dict[str, Any]:
    """``tokenizer_config.json``: the ``tokenizer.json`` as a ``PreTrainedTokenizerFast``.

    The data stage writes each document followed by the end-of-text token and nothing before it, so that
    token is the only separator the model saw: it is eos, and bos too (a document in the training stream
    starts right after one, GPT-2's convention); the tokenizer adds neither, so ``AutoTokenizer`` encodes
    text to exactly the ids of the data stage. pad is the same token: the vocabulary has no other special
    token and adding one would change the embedding; padded positions are masked by the attention mask,
    and ``generate`` needs a pad id for batches. No clean-up of spaces: decoding gives the text back.
    """
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "pad_token": EOT,
        "model_max_length": cfg.max_seq_len,
        "clean_up_tokenization_spaces": False,
    }


def tokenizer_source(checkpoint: Path, record: RunRecord, given: Path | None) -> Path:
    """The ``tokenizer.json`` the checkpoint was trained with: ``given`` (a file, or a directory holding
    one), else the one beside the corpus manifest of its run record; checked against the recorded sha256.

    A checkpoint with neither (an import, say) is an error rather than an export without a tokenizer:
    transformers does not fail on such a folder, ``AutoTokenizer`` silently builds a tokenizer that encodes
    text to no ids, so a model-only folder would look complete and run on nothing. A warning line would be
    lost in a workflow log and the folder would still look done to Snakemake; the error names the fix.
    """
    recorded = record.data.tokenizer_sha256
    if given is not None:
        path = given / HF_TOKENIZER if given.is_dir() else given
        if not path.is_file():
            raise UserError(f"--tokenizer {given}: no such file (give a tokenizer.json or a folder holding one)")
        where = f"--tokenizer {path}"
    elif record.data.manifest:
        path = Path(record.data.manifest).parent / HF_TOKENIZER
        if not path.is_file():
            raise UserError(
                f"{checkpoint}: the tokenizer of its corpus, {path}, is missing; "
                "pass --tokenizer PATH (the tokenizer.json it was trained with)"
            )
        where = f"{path} (the corpus tokenizer of {checkpoint})"
    else:
        raise UserError(
            f"{checkpoint}: its run record (kind {record.kind}) names no corpus tokenizer; pass --tokenizer PATH "
            "(the tokenizer.json the model was trained with) so the export can be loaded and run"
        )
    if recorded and (actual := sha256_file(path)) != recorded:
        raise UserError(
            f"{where}: sha256 {actual[:12]}... differs from the tokenizer {checkpoint} was trained with "
            f"({recorded[:12]}...)"
        )
    return path


def read_tokenizer(path: Path, vocab_size: int) -> tuple[bytes, int]:
    """The bytes of a ``tokenizers`` ``tokenizer.json`` and its end-of-text id, checked to fit the model."""
    from tokenizers import Tokenizer

    data = path.read_bytes()
    try:
        tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as err:  # tokenizers raises plain Exception subclasses with multi-line messages
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a tokenizers tokenizer.json ({reason})") from None
    size = 1 + max(tok.get_vocab(with_added_tokens=True).values(), default=-1)
    if size > vocab_size:
        raise UserError(f"{path}: token ids up to {size - 1} do not fit the model's vocab_size {vocab_size}")
    eot_id = tok.token_to_id(EOT)
    if eot_id is None:
        raise UserError(f"{path}: no end-of-text token {EOT!r} (the model's eos)")
    return data, eot_id


def export_hf(checkpoint: Path, out: Path, tokenizer: Path | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` that ``AutoModelForCausalLM.from_pretrained`` loads, with
    the tokenizer files ``AutoTokenizer.from_pretrained`` loads and a ``generation_config.json``."""
    model, record = load_model(checkpoint)
    tokenizer_bytes, eot_id = read_tokenizer(tokenizer_source(checkpoint, record, tokenizer), model.cfg.vocab_size)
    config = hf_config(model.cfg, eot_id)
    tensors = hf_state(model.cfg, fold_for_export(model.cfg, state_dict_for_saving(model), "Hugging Face Qwen2"))
    with staged_dir(out) as tmp:
        write_json(tmp / HF_CONFIG, config)
        with atomic_path(tmp / HF_WEIGHTS) as path:
            save_file(tensors, str(path), metadata={"format": "pt"})  # one key: safetensors orders keys at random
        write_bytes(tmp / HF_TOKENIZER, tokenizer_bytes)
        write_json(tmp / HF_TOKENIZER_CONFIG, tokenizer_config(model.cfg))
        write_json(tmp / HF_GENERATION, {**special_token_ids(eot_id), "do_sample": False})


def _nonzero(tensors: dict[str, torch.Tensor], names: Sequence[str]) -> bool:
    """Whether any named tensor has a non-zero entry (a missing one counts as non-zero: the load names it)."""
    return any(name not in tensors or bool(tensors[name].any()) for name in names)


def config_from_hf(
    hf: dict[str, Any], tensors: dict[str, torch.Tensor], where: Path, max_seq_len: int | None = None
) -> ModelConfig:
    """Our config for a Qwen2 / Llama / Mistral or Qwen2-MoE ``config.json`` with context ``max_seq_len``
    (default ``max_position_embeddings``); refuses what our model cannot compute (``stages.interop.hf_config``)."""
    model_type(hf, where)
    n_layer = integer(hf, "num_hidden_layers", where)
    layers = [f"model.layers.{i}" for i in range(n_layer)]
    if hf.get("model_type") != "qwen2_moe":
        qkv_bias = hf.get("model_type") == "qwen2" and _nonzero(
            tensors, [f"{p}.self_attn.{x}_proj.bias" for p in layers for x in "qkv"]
        )
        return dense_config(hf, where, qkv_bias=qkv_bias, max_seq_len=max_seq_len)
    check_computable(hf, where, context_of(hf, where, max_seq_len))
    d_ff = integer(hf, "intermediate_size", where)
    moe = None
    experts, top_k = integer(hf, "num_experts", where, minimum=0), integer(hf, "num_experts_per_tok", where)
    width = integer(hf, "moe_intermediate_size", where, minimum=0)
    shared = integer(hf, "shared_expert_intermediate_size", where, minimum=0)
    step, dense = integer(hf, "decoder_sparse_step", where, default=1), set(hf.get("mlp_only_layers") or [])
    sparse = [i for i in range(n_layer) if i not in dense and experts > 0 and (i + 1) % step == 0]
    if sparse:
        if width <= 0 or d_ff % width:
            raise UserError(
                f"{where}: moe_intermediate_size {width} does not divide intermediate_size {d_ff} "
                "(expert width must be d_ff / granularity)"
            )
        if shared and not _nonzero(tensors, [f"{layers[i]}.mlp.shared_expert.down_proj.weight" for i in sparse]):
            shared = 0
        moe = MoEConfig(
            experts=experts,
            top_k=top_k,
            granularity=d_ff // width,
            norm_topk_prob=bool(hf.get("norm_topk_prob")),
            layers=None if len(sparse) == n_layer else tuple(sparse),
            shared_expert_d_ff=shared,
            aux_loss_coef=real(hf, "router_aux_loss_coef", where, 0.001, zero=True) * top_k,
        )
    return base_config(hf, where, max_seq_len, qkv_bias=bool(hf.get("qkv_bias", True)), moe=moe)


def state_from_hf(cfg: ModelConfig, tensors: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """Hugging Face tensors under our names (fp32), experts packed, exactly-zero extras dropped."""
    state: dict[str, torch.Tensor] = {}
    per_expert: dict[str, dict[tuple[int, str], torch.Tensor]] = {}
    no_shared = cfg.moe is None or cfg.moe.shared_expert_d_ff == 0
    for name, tensor in tensors.items():
        if (
            name.endswith("rotary_emb.inv_freq")
            or (name == "lm_head.weight" and cfg.tie_embeddings)
            or (not cfg.qkv_bias and _QKV_BIAS.fullmatch(name))
            or (no_shared and ".mlp.shared_expert" in name)
        ):
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


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """One safetensors file, or one ``pytorch_model.bin`` read as tensors only (``weights_only``: no code runs)."""
    if path.suffix == ".safetensors":
        return load_weights(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle and zip errors of every kind: the file is not a plain tensor dict
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable PyTorch weights file ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise UserError(f"{path}: not a dictionary of tensors")
    return state


def read_hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a single-file or sharded model (safetensors, or ``pytorch_model.bin``), and the sha256 of
    each file read."""
    files = weight_files(directory)
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(_read_weight_file(directory / name))
    return tensors, {name: sha256_file(directory / name) for name in files}


def import_hf(
    directory: Path,
    out: Path,
    max_seq_len: int | None = None,
    tokens: int | None = None,
    flops_convention: str = "6N",
    run_id: str | None = None,
) -> None:
    """Read a Qwen2 / Llama / Mistral / Qwen2-MoE directory into our checkpoint format, with context
    ``max_seq_len`` (default ``max_position_embeddings``) and the stated pre-training ``tokens`` (default:
    unknown; see :func:`stages.interop.common.save_import`). A ``tokenizer.json`` beside the weights is
    recorded by sha256 as the model's tokenizer."""
    hf = read_config(directory)
    tensors, shas = read_hf_weights(directory)
    cfg = config_from_hf(hf, tensors, directory / HF_CONFIG, max_seq_len)
    model = checked_model(cfg, state_from_hf(cfg, tensors, directory), directory / HF_CONFIG, directory)
    shas[HF_CONFIG] = sha256_file(directory / HF_CONFIG)
    tokenizer = directory / HF_TOKENIZER
    tokenizer_sha = sha256_file(tokenizer) if tokenizer.is_file() else ""  # the run record's data.tokenizer_sha256
    save_import(
        model,
        out,
        "hf",
        directory,
        shas,
        run_id=run_id,
        tokens=tokens,
        flops_convention=flops_convention,
        tokenizer_sha256=tokenizer_sha,
    )
