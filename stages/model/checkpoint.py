"""Checkpoint directories: ``model.safetensors`` + ``config.json`` + ``provenance.json``.

Weights only travel as safetensors (no pickle). Every file is written atomically. Loading checks that
the configuration matches the weights and, where asked, that the weights are the ones a provenance
record names (sha256), so a swapped or truncated file is one clear error instead of a silent rerun
on the wrong model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stages.core.artifacts import atomic_path, read_json, sha256_file, write_json
from stages.core.cli import UserError
from stages.model.transformer import Transformer
from stages.model.config import ModelConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PROVENANCE = "provenance.json"


def state_dict_for_saving(model: Transformer) -> dict[str, torch.Tensor]:
    """Contiguous CPU fp32 tensors; a tied output head is stored once (as the embedding)."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.cfg.tie_embeddings:
            continue
        out[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    return out


def save_checkpoint(directory: str | Path, model: Transformer, provenance: dict[str, Any]) -> None:
    """Write the three files of a checkpoint; the provenance records the weights' sha256."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state_dict_for_saving(model), str(tmp), metadata={"format": "pt"})
    write_json(directory / CONFIG, model.cfg.to_dict())
    record = dict(provenance)
    record["weights_sha256"] = sha256_file(directory / WEIGHTS)
    write_json(directory / PROVENANCE, record)


def lineage_entry(provenance: dict[str, Any]) -> dict[str, Any]:
    """What a child keeps of its parent's provenance: enough to recover D1, the sunk FLOPs and the chain."""
    keys = ("run_id", "kind", "labels", "tokens", "steps", "flops", "flops_convention", "N_active", "N_total",
            "weights_sha256", "code_hash", "lr_policy", "peak_lr", "recipe")
    return {k: provenance.get(k) for k in keys}


def load_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    try:
        return ModelConfig.from_dict(data)
    except TypeError as err:
        raise UserError(f"{path}: invalid model config ({err})") from None
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def load_provenance(directory: str | Path) -> dict[str, Any]:
    data = read_json(Path(directory) / PROVENANCE)
    if not isinstance(data, dict):
        raise UserError(f"{Path(directory) / PROVENANCE}: expected a JSON object")
    return data


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None


def load_model(directory: str | Path, verify_provenance: bool = True) -> tuple[Transformer, dict[str, Any]]:
    """Build the model from ``config.json`` and load its weights, checking names, shapes and sha256."""
    directory = Path(directory)
    cfg = load_config(directory)
    provenance = load_provenance(directory)
    weights_path = directory / WEIGHTS
    if verify_provenance and "weights_sha256" in provenance:
        actual = sha256_file(weights_path)
        if actual != provenance["weights_sha256"]:
            raise UserError(
                f"{weights_path}: sha256 {actual[:12]}... does not match {directory / PROVENANCE} "
                f"({provenance['weights_sha256'][:12]}...); the weights were changed or truncated"
            )
    state = load_weights(weights_path)
    model = Transformer(cfg)
    expected = state_dict_for_saving(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise UserError(f"{directory / CONFIG}: does not match {weights_path} ({what})")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UserError(
                f"{directory / CONFIG}: does not match {weights_path} ({name} has shape "
                f"{tuple(state[name].shape)}, config implies {tuple(tensor.shape)})"
            )
    model.load_state_dict(state, strict=not cfg.tie_embeddings)
    return model, provenance
