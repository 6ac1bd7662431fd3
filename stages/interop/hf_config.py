"""What a local Hugging Face model directory holds, and which of its dense architectures our model computes.

Qwen2, Llama and Mistral (``Qwen2ForCausalLM``, ``LlamaForCausalLM``, ``MistralForCausalLM``) share the
parameter names and the math of our model: pre-norm RMSNorm, rotate-half RoPE, grouped KV, SwiGLU, tied or
untied embeddings; they differ in biases (Qwen2 always has q/k/v biases, Llama may have biases on every
projection) and attention windows (Mistral, and Qwen2 with ``use_sliding_window``). What our model cannot
compute is refused in one line naming the ``config.json`` key: another activation, scaled or partial RoPE,
a head_dim other than hidden_size / heads, Llama's ``attention_bias`` (it includes ``o_proj``) or
``mlp_bias``, and a sliding window shorter than the context (a window that covers it is full attention).

Torch-free: the workflow reads a parent's shape and files with it while building the DAG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json
from stages.core.cli import UserError
from stages.model.config import ModelConfig

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
GENERATION = "generation_config.json"
DENSE_TYPES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
MODEL_TYPES = (*DENSE_TYPES, "qwen2_moe")
QWEN2_SLIDING_WINDOW = 4096  # transformers' default when use_sliding_window is set without a window


def read_config(directory: Path) -> dict[str, Any]:
    """The ``config.json`` of a model directory, as a JSON object."""
    hf = read_json(directory / CONFIG)
    if not isinstance(hf, dict):
        raise UserError(f"{directory / CONFIG}: expected a JSON object")
    return hf


def weight_files(directory: Path) -> list[str]:
    """The weight files of a model directory: one safetensors file, the shards its index names, or the same
    for ``pytorch_model.bin`` (read without executing code); safetensors first."""
    for single, index in ((SAFETENSORS, SAFETENSORS_INDEX), (PICKLE, PICKLE_INDEX)):
        if (directory / single).exists():
            return [single]
        if (directory / index).exists():
            data = read_json(directory / index)
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise UserError(f"{directory / index}: no weight_map object")
            return sorted(set(weight_map.values()))
    raise UserError(f"{directory}: no {SAFETENSORS}, {SAFETENSORS_INDEX}, {PICKLE} or {PICKLE_INDEX}")


def require(config: dict[str, Any], key: str, where: Path) -> Any:
    """``config[key]``, or a one-line error naming the file that lacks it."""
    if key not in config:
        raise UserError(f"{where}: missing key {key!r}")
    return config[key]


def integer(config: dict[str, Any], key: str, where: Path, minimum: int = 1, default: int | None = None) -> int:
    """``config[key]`` as an integer of at least ``minimum`` (``default`` when absent or null; without one the key
    is required), or a one-line error naming the key: a string such as ``"32"`` or a 0 where a count divides would
    fail far from here."""
    value = config.get(key) if default is not None else require(config, key, where)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{where}: {key} {value!r}: expected an integer >= {minimum}")
    return value


def real(config: dict[str, Any], key: str, where: Path, default: float, zero: bool = False) -> float:
    """``config[key]`` (``default`` when absent), checked to be a finite positive number (or 0 with ``zero``),
    else a one-line error naming the key; returned as it is (an integer stays one)."""
    value = config.get(key, default)
    number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not number or value < 0 or (value == 0 and not zero):
        raise UserError(f"{where}: {key} {value!r}: expected a number {'>=' if zero else '>'} 0")
    return value


def sliding_window(hf: dict[str, Any]) -> int | None:
    """The attention window some layer uses, or None (full attention everywhere), as transformers reads it:
    Mistral applies ``sliding_window`` when it is set; Qwen2 (and Qwen2-MoE) only with ``use_sliding_window``,
    on the layers from ``max_window_layers`` on (or as ``layer_types`` lists them)."""
    if hf.get("model_type") == "mistral":
        return hf.get("sliding_window")
    layers = hf.get("num_hidden_layers", 0)
    sliding = "sliding_attention" in (hf.get("layer_types") or [])
    first = hf.get("max_window_layers")
    sliding |= bool(hf.get("use_sliding_window")) and (28 if first is None else first) < layers
    return hf.get("sliding_window", QWEN2_SLIDING_WINDOW) if sliding else None


def model_type(hf: dict[str, Any], where: Path) -> str:
    """The ``model_type`` of a config we can read, or a one-line error (the first check of every import)."""
    kind = hf.get("model_type")
    if kind not in MODEL_TYPES:
        raise UserError(f"{where}: model_type {kind!r} is not one of {', '.join(MODEL_TYPES)}")
    return kind


def check_computable(hf: dict[str, Any], where: Path, context: int) -> None:
    """Refuse, naming the key, what our model cannot compute for a ``context``-token sequence."""
    model_type(hf, where)
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported (SwiGLU needs silu)")
    rope = hf.get("rope_parameters") or {}
    if hf.get("rope_scaling"):
        raise UserError(f"{where}: rope_scaling {hf['rope_scaling']!r}: only the default (unscaled) RoPE is supported")
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UserError(f"{where}: rope_parameters: only the default (unscaled) RoPE is supported")
    for source in (hf, rope):
        if source.get("partial_rotary_factor", 1.0) != 1.0:
            factor = source["partial_rotary_factor"]
            raise UserError(f"{where}: partial_rotary_factor {factor}: only full rotary embeddings are supported")
    d_model, n_head = integer(hf, "hidden_size", where), integer(hf, "num_attention_heads", where)
    integer(hf, "num_hidden_layers", where)
    integer(hf, "max_window_layers", where, minimum=0, default=28)
    if d_model % n_head or hf.get("head_dim") not in (None, d_model // n_head):
        raise UserError(
            f"{where}: head_dim {hf.get('head_dim')} is not hidden_size / num_attention_heads ({d_model} / {n_head})"
        )
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise UserError(f"{where}: {key} is true; biases are supported on q/k/v projections only (qkv_bias)")
    window = sliding_window(hf)
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise UserError(f"{where}: sliding_window {window!r}: expected an integer (or null)")
    if window is not None and window < context:
        raise UserError(
            f"{where}: sliding_window {window} is shorter than the context of {context} tokens; sliding-window "
            "attention is not supported (import with a context of at most the window)"
        )


def context_of(hf: dict[str, Any], where: Path, max_seq_len: int | None) -> int:
    """The context length of the import: ``max_seq_len`` when given, else ``max_position_embeddings``."""
    if max_seq_len is not None:
        return max_seq_len
    return integer(hf, "max_position_embeddings", where)


def base_config(hf: dict[str, Any], where: Path, max_seq_len: int | None = None, **extra: Any) -> ModelConfig:
    """Our config for a checked ``config.json`` (``extra``: ``qkv_bias`` and ``moe``, which depend on the model
    type and the weights)."""
    context = context_of(hf, where, max_seq_len)
    check_computable(hf, where, context)
    rope = hf.get("rope_parameters") or {}
    n_head = integer(hf, "num_attention_heads", where)
    theta = real(rope, "rope_theta", where, hf.get("rope_theta", 10000.0)) if "rope_theta" in rope else None
    try:
        return ModelConfig(
            vocab_size=integer(hf, "vocab_size", where),
            n_layer=integer(hf, "num_hidden_layers", where),
            d_model=integer(hf, "hidden_size", where),
            n_head=n_head,
            d_ff=integer(hf, "intermediate_size", where),
            n_kv_head=integer(hf, "num_key_value_heads", where, minimum=0, default=0) or n_head,
            max_seq_len=context,
            rope_theta=float(theta if theta is not None else real(hf, "rope_theta", where, 10000.0)),
            norm_eps=real(hf, "rms_norm_eps", where, 1e-6),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            init_std=real(hf, "initializer_range", where, 0.02, zero=True),
            **extra,
        )
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def dense_config(
    hf: dict[str, Any], where: Path, qkv_bias: bool | None = None, max_seq_len: int | None = None
) -> ModelConfig:
    """Our config for a dense Qwen2 / Llama / Mistral ``config.json``. ``qkv_bias`` None: the architecture's
    (Qwen2 has the biases; the import decides from the weights, dropping all-zero ones)."""
    kind = hf.get("model_type")
    if kind not in DENSE_TYPES:
        raise UserError(f"{where}: model_type {kind!r} is not a dense {', '.join(DENSE_TYPES)} model")
    bias = kind == "qwen2" if qkv_bias is None else qkv_bias
    return base_config(hf, where, max_seq_len, qkv_bias=bias)


@dataclass(frozen=True)
class HFTokenizer:
    """A model directory's ``tokenizer.json`` and what says which token ends a sequence and how many
    embedding rows the model has (which may exceed the tokenizer's ids)."""

    path: Path
    eos: str | None  # tokenizer_config.json's eos_token
    eos_id: int | None  # else config.json's (or generation_config.json's) eos_token_id
    vocab_size: int | None  # config.json's vocab_size


def _eos_id(*configs: dict[str, Any]) -> int | None:
    for cfg in configs:
        value = cfg.get("eos_token_id")
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def hf_tokenizer(path: Path) -> HFTokenizer:
    """The tokenizer of a model directory (or of the folder of a given ``tokenizer.json``)."""
    directory = path if path.is_dir() else path.parent
    file = directory / TOKENIZER if path.is_dir() else path
    if not file.is_file():
        raise UserError(
            f"{path}: no {TOKENIZER} (a folder with only a slow tokenizer can be converted with transformers: "
            "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR))"
        )
    configs = []
    for name in (TOKENIZER_CONFIG, CONFIG, GENERATION):
        data = read_json(directory / name) if (directory / name).is_file() else {}
        configs.append(data if isinstance(data, dict) else {})
    eos = configs[0].get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    vocab = configs[1].get("vocab_size")
    return HFTokenizer(
        path=file,
        eos=eos if isinstance(eos, str) and eos else None,
        eos_id=_eos_id(configs[1], configs[2]),
        vocab_size=vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None,
    )
