"""Checkpoint directories: ``model.safetensors`` + ``config.json`` + ``provenance.json``.

Weights only travel as safetensors (no pickle). Every file is written atomically. Loading checks that
the configuration matches the weights and, where asked, that the weights are the ones the run
record names (sha256), so a swapped or truncated file is one clear error instead of a silent rerun
on the wrong model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stages.core.artifacts import atomic_path, sha256_file, write_json
from stages.core.cli import UserError
from stages.core.record import RECORD, RunRecord, read_record, write_record
from stages.model.config import CONFIG, ModelConfig
from stages.model.transformer import Transformer

WEIGHTS = "model.safetensors"


def state_dict_for_saving(model: Transformer) -> dict[str, torch.Tensor]:
    """Contiguous CPU fp32 tensors; a tied output head is stored once (as the embedding)."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.cfg.tie_embeddings:
            continue
        out[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    return out


def save_checkpoint(directory: str | Path, model: Transformer, record: RunRecord) -> None:
    """Write the three files of a checkpoint; the run record gets the weights' sha256."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state_dict_for_saving(model), str(tmp), metadata={"format": "pt"})
    write_json(directory / CONFIG, model.cfg.to_dict())
    write_record(directory, dataclasses.replace(record, weights_sha256=sha256_file(directory / WEIGHTS)))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None


def load_model(directory: str | Path, verify_record: bool = True) -> tuple[Transformer, RunRecord]:
    """Build the model from ``config.json`` and load its weights, checking names, shapes and sha256."""
    directory = Path(directory)
    cfg = ModelConfig.read(directory)
    record = read_record(directory)
    weights_path = directory / WEIGHTS
    if verify_record and record.weights_sha256:
        actual = sha256_file(weights_path)
        if actual != record.weights_sha256:
            raise UserError(
                f"{weights_path}: sha256 {actual[:12]}... does not match {directory / RECORD} "
                f"({record.weights_sha256[:12]}...); the weights were changed or truncated"
            )
    return checked_model(cfg, load_weights(weights_path), directory / CONFIG, weights_path), record


def checked_model(cfg: ModelConfig, state: dict[str, torch.Tensor], config: Path, weights: Path) -> Transformer:
    """The model ``cfg`` describes, holding ``state`` once its names and shapes are exactly the config's.

    A mismatch is one error naming the ``config`` and ``weights`` files and the first missing, unexpected
    or misshapen tensor.
    """
    model = Transformer(cfg)
    expected = state_dict_for_saving(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise UserError(f"{config}: does not match {weights} ({what})")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UserError(
                f"{config}: does not match {weights} ({name} has shape "
                f"{tuple(state[name].shape)}, config implies {tuple(tensor.shape)})"
            )
    model.load_state_dict(state, strict=not cfg.tie_embeddings)
    return model
