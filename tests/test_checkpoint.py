"""Checkpoint files: safetensors only, verified against provenance, config checked against the weights."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from stages.core.cli import UserError
from stages.core.record import RunRecord
from stages.model.checkpoint import load_model, save_checkpoint
from stages.model.config import MoEConfig
from stages.model.transformer import Transformer, seed_generator


def saved(tmp_path, **cfg):
    model = Transformer(tiny_config(**cfg))
    model.init_weights(seed_generator(0))
    save_checkpoint(tmp_path / "ckpt", model, RunRecord(run_id="t", kind="dense", code_hash="", torch_version=""))
    return tmp_path / "ckpt", model


def test_round_trip_is_exact_and_tied_head_stored_once(tmp_path):
    directory, model = saved(tmp_path, moe=MoEConfig(experts=4, top_k=2, shared_expert_d_ff=16))
    loaded, prov = load_model(directory)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert prov.weights_sha256 and json.loads((directory / "config.json").read_text())["moe"]["experts"] == 4


def test_changed_weights_are_detected_against_provenance(tmp_path):
    directory, _ = saved(tmp_path)
    data = bytearray((directory / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (directory / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="model.safetensors: sha256 .* does not match .*provenance.json"):
        load_model(directory)


def test_corrupt_safetensors_without_provenance_check(tmp_path):
    directory, _ = saved(tmp_path)
    (directory / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_model(directory, verify_record=False)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("d_ff", 128, "has shape"), ("n_layer", 3, "missing"), ("tie_embeddings", False, "missing 'lm_head.weight'")],
)
def test_config_that_does_not_match_the_weights(tmp_path, key, value, message):
    directory, _ = saved(tmp_path)
    cfg = json.loads((directory / "config.json").read_text())
    cfg[key] = value
    (directory / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=f"config.json: does not match .*model.safetensors.*{message}"):
        load_model(directory)


def test_unknown_config_key_and_bad_json(tmp_path):
    directory, _ = saved(tmp_path)
    cfg = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**cfg, "n_experts": 3}))
    with pytest.raises(UserError, match="unknown key 'n_experts'"):
        load_model(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json: not valid JSON"):
        load_model(directory)
