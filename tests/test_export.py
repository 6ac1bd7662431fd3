"""Exports to Hugging Face transformers and nanotron: same logits, identical round trips, one-line errors."""

from __future__ import annotations

import functools
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, tiny_config
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from stages.core.artifacts import sha256_file
from stages.core.cli import run
from stages.core.record import DataRef, RunRecord
from stages.corpus.sources import Document
from stages.corpus.tokenizer import EOT, train_tokenizer
from stages.export import main
from stages.interop.nanotron import nanotron_params, nanotron_path
from stages.model.checkpoint import load_model, save_checkpoint
from stages.model.config import MoEConfig
from stages.model.transformer import Transformer, seed_generator

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")

TOKENS = torch.randint(0, 96, (3, 20), generator=torch.Generator().manual_seed(7))
CASES = {
    "dense_tied": dict(),
    "dense_untied_gqa": dict(tie_embeddings=False, n_kv_head=2),
    "dense_qkv_bias_mqa": dict(qkv_bias=True, n_kv_head=1),
    "moe_norm_topk": dict(moe=MoEConfig(experts=4, top_k=2, norm_topk_prob=True)),
    "moe_no_norm_top1": dict(moe=MoEConfig(experts=4, top_k=1)),
    "moe_granularity4": dict(moe=MoEConfig(experts=8, top_k=2, granularity=4)),
    "moe_shared_untied": dict(tie_embeddings=False, moe=MoEConfig(experts=4, top_k=2, shared_expert_d_ff=48)),
    "moe_one_layer_of_3_bias_gqa": dict(
        n_layer=3,
        n_kv_head=2,
        qkv_bias=True,
        rope_theta=500.0,
        moe=MoEConfig(experts=4, top_k=2, layers=(1,), shared_expert_d_ff=16),
    ),
}


# A few KB of prose: the corpus of the tokenizer (and of the trained checkpoints below).
SENTENCES = [
    "The miller woke before the sun and walked down to the river.",
    "Water turned the old wheel, and the wheel turned the stones that ground the grain.",
    "In the village the baker waited for flour, and the children waited for bread.",
    "When the rain came the river rose, and the miller watched the water climb the bank.",
    "A heron stood in the shallows and did not move until a fish came near.",
    "At noon the carts came over the bridge with sacks of wheat from the farms on the hill.",
    "The miller's daughter counted the sacks and wrote the numbers in a small black book.",
    "In the evening the wheel was still, and the only sound was the river going by.",
]
PROSE = ["\n".join(SENTENCES[i:] + SENTENCES[:i]) + "\n" for i in range(len(SENTENCES))]
VOCAB = 300  # the models' vocab_size: the tokenizer's ids fit it


@functools.cache
def tokenizer_json() -> str:
    """A tokenizer trained by the data stage's own function on ``PROSE``."""
    return train_tokenizer([Document("prose", str(i), text) for i, text in enumerate(PROSE)], VOCAB).to_str()


def write_tokenizer(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(tokenizer_json())
    return directory / "tokenizer.json"


def random_model(seed: int = 0, **overrides) -> Transformer:
    """Random weights where init would leave constants (norms, biases) that could hide a swapped name."""
    model = Transformer(tiny_config(init_std=0.1, **{"vocab_size": VOCAB, **overrides}))
    model.init_weights(seed_generator(seed))
    gen = seed_generator(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("mlp.gate.weight"):
                p.mul_(10.0)  # decisive routing: no near-ties between the two implementations
    return model.eval()


def checkpoint(directory: Path, seed: int = 0, kind: str = "dense", **overrides) -> tuple[Transformer, Path]:
    """Our checkpoint of a random model; unless an import, its run record names a corpus tokenizer beside it."""
    model = random_model(seed, **overrides)
    data = DataRef()
    if kind != "import":
        tokenizer = write_tokenizer(directory.parent / f"{directory.name}-corpus")
        data = DataRef(manifest=str(tokenizer.with_name("manifest.json")), tokenizer_sha256=sha256_file(tokenizer))
    record = RunRecord(run_id=directory.name, kind=kind, code_hash="", torch_version="", data=data)
    save_checkpoint(directory, model, record)
    return model, directory


def convert(source: Path, out: Path, *direction: str) -> Path:
    main(["--checkpoint", str(source), *direction, "--out", str(out)])
    return out


def same_checkpoint(a: Path, b: Path) -> None:
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    sa, sb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(sa) == sorted(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits


HF_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
MOE_CASES = sorted(case for case, overrides in CASES.items() if "moe" in overrides)


@pytest.fixture(scope="module")
def hf_export(request, tmp_path_factory):
    """(case, our model, our checkpoint, HF export, HF model loaded by transformers), once per case."""
    root = tmp_path_factory.mktemp(request.param)
    model, ckpt = checkpoint(root / "ours", **CASES[request.param])
    out = convert(ckpt, root / "hf", "--to", "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    return request.param, model, ckpt, out, hf_model


@pytest.mark.parametrize("hf_export", sorted(CASES), indirect=True)
def test_hf_export_loads_in_transformers_with_the_same_logits(hf_export):
    case, model, _, out, hf_model = hf_export
    expected = "Qwen2MoeForCausalLM" if model.cfg.moe else "Qwen2ForCausalLM"
    assert type(hf_model).__name__ == expected
    assert json.loads((out / "config.json").read_text())["architectures"] == [expected]
    assert sorted(p.name for p in out.iterdir()) == HF_FILES
    diff = float((logits(hf_model) - logits(model)).abs().max())
    print(f"{case}: max |logit difference| ours vs transformers = {diff:.3g}")
    assert diff <= 1e-4


@pytest.mark.parametrize("hf_export", sorted(CASES), indirect=True)
def test_hf_round_trip_gives_identical_tensors(hf_export, tmp_path):
    _, _, ckpt, out, _ = hf_export
    same_checkpoint(ckpt, convert(out, tmp_path / "back", "--from", "hf"))
    source = json.loads((tmp_path / "back" / "provenance.json").read_text())["source"]
    assert source["format"] == "hf" and set(source["sha256"]) == {"config.json", "model.safetensors"}


@pytest.mark.parametrize("hf_export", MOE_CASES, indirect=True)
def test_hf_moe_config_maps_our_routing(hf_export):
    _, model, _, _, hf_model = hf_export
    moe, config = model.cfg.moe, hf_model.config
    assert config.norm_topk_prob == moe.norm_topk_prob
    assert (config.num_experts, config.num_experts_per_tok) == (moe.experts, moe.top_k)
    assert config.moe_intermediate_size == model.cfg.d_ff // moe.granularity
    assert config.shared_expert_intermediate_size == moe.shared_expert_d_ff
    dense_layers = [i for i in range(model.cfg.n_layer) if i not in model.cfg.moe_layers()]
    assert config.mlp_only_layers == dense_layers


@pytest.mark.parametrize("hf_export", MOE_CASES, indirect=True)
def test_transformers_router_logits_and_balancing_term(hf_export):
    _, model, _, _, hf_model = hf_export
    with torch.no_grad():
        hf_out = hf_model(TOKENS, output_router_logits=True)
        ours = model(TOKENS)
    assert len(hf_out.router_logits) == len(model.cfg.moe_layers())
    assert torch.isfinite(hf_out.aux_loss)
    if len(model.cfg.moe_layers()) == 1:  # one MoE layer: the balancing terms agree exactly in math
        hf_term = hf_model.config.router_aux_loss_coef * hf_out.aux_loss
        torch.testing.assert_close(hf_term, model.cfg.moe.aux_loss_coef * ours.aux_loss, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("hf_export", ["moe_shared_untied"], indirect=True)
def test_hf_import_reads_the_layouts_transformers_writes(hf_export, tmp_path):
    _, _, ckpt, out, hf_model = hf_export
    sharded = tmp_path / "sharded"
    hf_model.save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").exists()
    same_checkpoint(ckpt, convert(sharded, tmp_path / "from_sharded", "--from", "hf"))
    packed = tmp_path / "packed"  # transformers 5's in-memory layout: experts as 3-D tensors
    packed.mkdir()
    (packed / "config.json").write_text((out / "config.json").read_text())
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    assert "model.layers.0.mlp.experts.gate_up_proj" in state
    save_file(state, str(packed / "model.safetensors"), metadata={"format": "pt"})
    same_checkpoint(ckpt, convert(packed, tmp_path / "from_packed", "--from", "hf"))


def test_export_is_byte_deterministic(tmp_path):
    _, ckpt = checkpoint(tmp_path / "ours", moe=MoEConfig(experts=4, top_k=2))
    for fmt in ("hf", "nanotron"):
        a, b = convert(ckpt, tmp_path / f"{fmt}_a", "--to", fmt), convert(ckpt, tmp_path / f"{fmt}_b", "--to", fmt)
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        for f in files:
            if f.name != "config.yaml":  # the YAML names its own directory
                assert (a / f).read_bytes() == (b / f).read_bytes(), f


def one_line_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        run(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


@pytest.mark.parametrize("fmt", ["hf", "nanotron"])
def test_capacity_factor_cannot_be_exported(fmt, tmp_path, capsys):
    _, ckpt = checkpoint(tmp_path / "ours", moe=MoEConfig(experts=4, top_k=2, capacity_factor=1.25))
    err = one_line_error(["--checkpoint", str(ckpt), "--to", fmt, "--out", str(tmp_path / "x")], capsys)
    assert "capacity_factor" in err
    assert not (tmp_path / "x").exists()


def test_unknown_format_and_missing_checkpoint_are_one_line_errors(tmp_path, capsys):
    _, ckpt = checkpoint(tmp_path / "ours")
    err = one_line_error(["--checkpoint", str(ckpt), "--to", "onnx", "--out", str(tmp_path / "x")], capsys)
    assert "--to" in err and "onnx" in err
    err = one_line_error(["--checkpoint", str(tmp_path / "nope"), "--to", "hf", "--out", str(tmp_path / "x")], capsys)
    assert str(tmp_path / "nope") in err
    err = one_line_error(["--checkpoint", str(ckpt), "--from", "hf", "--out", str(tmp_path / "x")], capsys)
    assert "model_type" in err  # our own checkpoint is not a transformers directory


def test_cli_exit_status_and_message(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.export",
            "--checkpoint",
            str(tmp_path / "missing"),
            "--to",
            "hf",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --checkpoint {tmp_path / 'missing'}: not a directory"]


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("hidden_act", "gelu", "hidden_act"),
        ("head_dim", 16, "head_dim"),  # sliding windows: tests/test_import_hf.py (two keys make one)
        ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}, "rope_parameters"),
        ("moe_intermediate_size", 24, "moe_intermediate_size"),
    ],
)
def test_hf_import_refuses_what_the_model_cannot_compute(key, value, named, tmp_path, capsys):
    _, ckpt = checkpoint(tmp_path / "ours", moe=MoEConfig(experts=4, top_k=2))
    out = convert(ckpt, tmp_path / "hf", "--to", "hf")
    config = json.loads((out / "config.json").read_text())
    config[key] = value
    (out / "config.json").write_text(json.dumps(config))
    err = one_line_error(["--checkpoint", str(out), "--from", "hf", "--out", str(tmp_path / "back")], capsys)
    assert named in err


NANOTRON_CASES = [
    "dense_tied",
    "dense_qkv_bias_mqa",
    "moe_no_norm_top1",
    "moe_shared_untied",
    "moe_one_layer_of_3_bias_gqa",
]


@pytest.mark.parametrize("case", NANOTRON_CASES)
def test_nanotron_round_trip_gives_identical_tensors(case, tmp_path):
    model, ckpt = checkpoint(tmp_path / "ours", **CASES[case])
    out = convert(ckpt, tmp_path / "nt", "--to", "nanotron")
    same_checkpoint(ckpt, convert(out, tmp_path / "back", "--from", "nanotron"))


def test_nanotron_file_layout(tmp_path):
    model, ckpt = checkpoint(tmp_path / "ours", **CASES["moe_one_layer_of_3_bias_gqa"])
    out = convert(ckpt, tmp_path / "nt", "--to", "nanotron")
    cfg = model.cfg
    q, kv = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    suffix = "_pp-rank-0-of-1_tp-rank-0-of-1.safetensors"
    layer0, layer1 = out / "model/model/decoder/0/pp_block", out / "model/model/decoder/1/pp_block"
    expected = {  # path -> (shape, sharded)
        out / f"model/model/token_position_embeddings/pp_block/token_embedding/model_weight{suffix}": (
            (cfg.vocab_size, cfg.d_model),
            True,
        ),
        layer0 / f"attn/qkv_proj/model_weight{suffix}": ((q + 2 * kv, cfg.d_model), True),
        layer0 / f"attn/qkv_proj/model_bias{suffix}": ((q + 2 * kv,), True),
        layer0 / "input_layernorm/model_weight.safetensors": ((cfg.d_model,), False),
        layer0 / f"mlp/gate_up_proj/model_weight{suffix}": ((2 * cfg.d_ff, cfg.d_model), True),
        layer1 / "mlp/router/model_weight.safetensors": ((4, cfg.d_model), False),
        layer1 / "mlp/experts/model_merged_gate_up_proj.safetensors": ((4, cfg.d_model, 2 * cfg.d_ff), False),
        layer1 / "mlp/experts/model_merged_down_proj.safetensors": ((4, cfg.d_ff, cfg.d_model), False),
        layer1 / f"mlp/shared_expert/gate_up_proj/model_weight{suffix}": ((32, cfg.d_model), True),
        layer1 / "mlp/shared_expert_gate/model_weight.safetensors": ((1, cfg.d_model), False),
        out / "model/model/final_layer_norm/pp_block/model_weight.safetensors": ((cfg.d_model,), False),
    }
    written = {p for p in (out / "model").rglob("*") if p.is_file()}
    assert written == {nanotron_path(out, p.name, p.sharded) for p in nanotron_params(cfg)}
    assert set(expected) <= written and not any("lm_head" in str(p) for p in written)  # tied: stored once
    for path, (shape, sharded) in expected.items():
        with safe_open(str(path), framework="pt") as f:
            assert list(f.keys()) == ["data"]
            assert tuple(f.get_slice("data").get_shape()) == shape
            meta = f.metadata() or {}
        if sharded:
            full = "|".join(["None,None,None"] * len(shape))
            assert meta == {
                "version": "1.2",
                "unsharded_shape": str(shape),
                "local_global_slices_pairs": f"{full}#{full}",
            }
        else:
            assert meta == {}
    state = model.state_dict()
    qkv = load_file(layer0 / f"attn/qkv_proj/model_weight{suffix}")["data"]
    assert torch.equal(qkv[q : q + kv], state["model.layers.0.self_attn.k_proj.weight"])
    merged = load_file(layer1 / "mlp/experts/model_merged_gate_up_proj.safetensors")["data"]
    assert torch.equal(merged[2, :, : cfg.d_ff], state["model.layers.1.mlp.experts.gate_up_proj"][2, : cfg.d_ff].T)
    model_config = json.loads((out / "model_config.json").read_text())
    assert model_config["moe_config"]["layers"] == [1] and model_config["attention_bias"] is True
    assert model_config["rope_interleaved"] is False and model_config["rope_theta"] == 500.0
    run_config = yaml.safe_load((out / "config.yaml").read_text())
    assert run_config["model"]["init_method"] == {"path": str(out.resolve())}
    assert run_config["model"]["model_config"] == model_config


def test_nanotron_import_merges_tensor_parallel_shards(tmp_path):
    """Split every sharded file in two along dim 0 with nanotron's slice metadata, as tp=2 would save it."""
    _, ckpt = checkpoint(tmp_path / "ours", **CASES["moe_shared_untied"])
    out = convert(ckpt, tmp_path / "nt", "--to", "nanotron")
    for path in list((out / "model").rglob("*_tp-rank-0-of-1.safetensors")):
        data = load_file(path)["data"]
        half, rest = data.shape[0] // 2, "|None,None,None" * (data.ndim - 1)
        for rank, (start, stop) in enumerate([(0, half), (half, data.shape[0])]):
            meta = {
                "version": "1.5",
                "unsharded_shape": str(tuple(data.shape)),
                "local_global_slices_pairs": f"0,{stop - start},None{rest}#{start},{stop},None{rest}",
            }
            name = path.name.replace("tp-rank-0-of-1", f"tp-rank-{rank}-of-2")
            save_file({"data": data[start:stop].contiguous()}, str(path.with_name(name)), metadata=meta)
        path.unlink()
    same_checkpoint(ckpt, convert(out, tmp_path / "back", "--from", "nanotron"))


@pytest.mark.parametrize(
    ("key", "value"), [("rope_interleaved", True), ("sliding_window_size", 8), ("hidden_act", "gelu")]
)
def test_nanotron_import_refuses_what_the_model_cannot_compute(key, value, tmp_path, capsys):
    _, ckpt = checkpoint(tmp_path / "ours")
    out = convert(ckpt, tmp_path / "nt", "--to", "nanotron")
    model_config = json.loads((out / "model_config.json").read_text())
    model_config[key] = value
    (out / "model_config.json").write_text(json.dumps(model_config))
    err = one_line_error(["--checkpoint", str(out), "--from", "nanotron", "--out", str(tmp_path / "back")], capsys)
    assert key in err


def test_nanotron_cannot_express_renormalised_routing(tmp_path, capsys):
    _, ckpt = checkpoint(tmp_path / "ours", **CASES["moe_norm_topk"])
    err = one_line_error(["--checkpoint", str(ckpt), "--to", "nanotron", "--out", str(tmp_path / "x")], capsys)
    assert "norm_topk_prob" in err


def test_import_names_a_missing_tensor(tmp_path, capsys):
    _, ckpt = checkpoint(tmp_path / "ours")
    out = convert(ckpt, tmp_path / "hf", "--to", "hf")
    state = load_file(out / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    err = one_line_error(["--checkpoint", str(out), "--from", "hf", "--out", str(tmp_path / "back")], capsys)
    assert "model.layers.1.mlp.up_proj.weight" in err


def python_m(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A dense checkpoint trained on a corpus the data stage built from ``PROSE``, and its upcycled MoE
    trained further: the checkpoints a user exports."""
    root = tmp_path_factory.mktemp("trained")
    files = []
    for i, text in enumerate(PROSE):
        (root / f"doc{i}.txt").write_text(text)
        files.append(str(root / f"doc{i}.txt"))
    corpus, dense, surgery, moe = root / "corpus", root / "dense", root / "surgery", root / "moe"
    python_m("stages.data", "--out", str(corpus), "--files", *files, "--vocab-size", "300", "--val-fraction", "0.25")
    options = json.dumps({"seq_len": 32, "batch_size": 8, "lr": 0.01})
    train = ["stages.train", "--data", str(corpus), "--tokens", "16K", "--seed", "3", "--data-seed", "4"]
    train += ["--train", options]
    model = json.dumps({"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64})
    python_m(
        *train,
        "--kind",
        "dense",
        "--model",
        model,
        "--run-id",
        "dense",
        "--out",
        str(dense),
        "--work-dir",
        str(root / "w1"),
    )
    moe_options = json.dumps({"experts": 4, "top_k": 2, "norm_topk_prob": True})
    upcycle = ["stages.upcycle", "--dense", str(dense), "--data", str(corpus), "--seed", "1", "--eval-tokens", "64"]
    python_m(*upcycle, "--moe", moe_options, "--out", str(surgery))
    python_m(
        *train,
        "--kind",
        "upcycled",
        "--init",
        str(surgery),
        "--run-id",
        "moe",
        "--out",
        str(moe),
        "--work-dir",
        str(root / "w2"),
    )
    return {"corpus": corpus, "dense": dense, "moe": moe}


def assert_readable_by_others(out: Path) -> None:
    """Directories 0755 and files 0644, the export folder itself included."""
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert {p: m for p, m in modes.items() if m != (0o755 if p.is_dir() else 0o644)} == {}


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_trained_export_tokenizes_and_generates_in_transformers(trained, kind, tmp_path):
    from tokenizers import Tokenizer

    out = convert(trained[kind], tmp_path / "hf", "--to", "hf")
    assert sorted(p.name for p in out.iterdir()) == HF_FILES
    assert (out / "tokenizer.json").read_bytes() == (trained["corpus"] / "tokenizer.json").read_bytes()
    assert_readable_by_others(out)

    ours = Tokenizer.from_file(str(trained["corpus"] / "tokenizer.json"))
    eot = ours.token_to_id(EOT)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = "The miller woke before the sun and walked"
    ids = tokenizer(text).input_ids
    assert ids == ours.encode(text).ids and len(ids) > 3
    assert tokenizer.decode(ids) == text
    assert (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id) == (eot, eot, eot)
    assert tokenizer.model_max_length == 32  # the training seq_len
    config = json.loads((out / "config.json").read_text())
    generation = json.loads((out / "generation_config.json").read_text())
    for ids_of in (config, generation):
        assert (ids_of["bos_token_id"], ids_of["eos_token_id"], ids_of["pad_token_id"]) == (eot, eot, eot)

    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    expected = "Qwen2MoeForCausalLM" if kind == "moe" else "Qwen2ForCausalLM"
    assert type(model).__name__ == expected
    assert model.generation_config.do_sample is False and model.generation_config.eos_token_id == eot
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = generated[0, inputs.input_ids.shape[1] :].tolist()
    completion = tokenizer.decode(new)
    print(f"{kind}: {text!r} -> {len(new)} new tokens {new} {completion!r}")
    assert generated[0, : len(ids)].tolist() == ids and len(new) == 8
    assert completion == ours.decode(new) and completion

    back = convert(out, tmp_path / "back", "--from", "hf")  # the import ignores the tokenizer files
    same_checkpoint(trained[kind], back)


def test_export_of_a_checkpoint_without_a_tokenizer_needs_one(tmp_path, capsys):
    """An import's run record names no corpus: the export refuses (one line naming --tokenizer) and writes
    nothing, rather than a folder whose ``AutoTokenizer`` encodes text to no ids; --tokenizer gives one."""
    _, ckpt = checkpoint(tmp_path / "imported", kind="import")
    out = tmp_path / "hf"
    err = one_line_error(["--checkpoint", str(ckpt), "--to", "hf", "--out", str(out)], capsys)
    assert "--tokenizer" in err and str(ckpt) in err
    assert not out.exists()
    tokenizer = write_tokenizer(tmp_path / "tok")
    convert(ckpt, out, "--to", "hf", "--tokenizer", str(tokenizer.parent))  # a folder holding tokenizer.json
    assert (out / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    assert transformers.AutoTokenizer.from_pretrained(out)("the miller").input_ids
    err = one_line_error(["--checkpoint", str(ckpt), "--to", "nanotron", "--out", str(out), "--tokenizer", "x"], capsys)
    assert "--tokenizer" in err


def test_export_refuses_a_tokenizer_the_checkpoint_was_not_trained_with(tmp_path, capsys):
    _, ckpt = checkpoint(tmp_path / "ours")
    other = tmp_path / "other" / "tokenizer.json"
    other.parent.mkdir()
    other.write_text(train_tokenizer([Document("x", "0", "a b c d " * 50)], VOCAB).to_str())
    out = tmp_path / "hf"
    err = one_line_error(
        ["--checkpoint", str(ckpt), "--to", "hf", "--out", str(out), "--tokenizer", str(other)], capsys
    )
    assert "sha256" in err and str(other) in err
    corpus_tokenizer = tmp_path / "ours-corpus" / "tokenizer.json"
    corpus_tokenizer.write_bytes(other.read_bytes())  # the corpus changed after training
    err = one_line_error(["--checkpoint", str(ckpt), "--to", "hf", "--out", str(out)], capsys)
    assert "sha256" in err and str(corpus_tokenizer) in err
    corpus_tokenizer.unlink()
    err = one_line_error(["--checkpoint", str(ckpt), "--to", "hf", "--out", str(out)], capsys)
    assert "missing" in err and "--tokenizer" in err
    _, small = checkpoint(tmp_path / "small", kind="import", vocab_size=96)
    err = one_line_error(
        ["--checkpoint", str(small), "--to", "hf", "--out", str(out), "--tokenizer", str(other)], capsys
    )
    assert "vocab_size 96" in err
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["hf", "nanotron"])
def test_exports_are_readable_by_others_whatever_the_umask(fmt, tmp_path):
    _, ckpt = checkpoint(tmp_path / "ours", moe=MoEConfig(experts=4, top_k=2))
    old = os.umask(0o077)
    try:
        out = convert(ckpt, tmp_path / fmt, "--to", fmt)
    finally:
        os.umask(old)
    assert_readable_by_others(out)
    assert any(p.is_dir() for p in out.rglob("*")) == (fmt == "nanotron")


# ----- muP: the export writes the SP model with the same function (factors folded into weights) -----------

MUP_CASES = {  # tiny_config: d_model 32, n_head 4 (head_dim 8)
    "mup_dense_untied": dict(tie_embeddings=False, parametrization="mup", mup_base_d_model=16),  # m 2, base hd 4
    "mup_moe_untied_bias_gqa": dict(
        tie_embeddings=False,
        qkv_bias=True,
        n_kv_head=2,
        parametrization="mup",
        mup_base_d_model=8,  # m 4
        mup_base_head_dim=2,
        moe=MoEConfig(experts=4, top_k=2, shared_expert_d_ff=16),
    ),
    "mup_tied_at_base_width": dict(parametrization="mup", mup_base_d_model=32, mup_base_head_dim=12),  # m 1
}


@pytest.mark.parametrize("case", sorted(MUP_CASES))
def test_mup_export_folds_its_factors_and_computes_the_same_logits(case, tmp_path):
    """The HF model (transformers) and the SP models read back from HF and nanotron give our muP logits."""
    model, ckpt = checkpoint(tmp_path / "ours", **MUP_CASES[case])
    out = convert(ckpt, tmp_path / "hf", "--to", "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    diff = float((logits(hf_model) - logits(model)).abs().max())
    print(f"{case}: max |logit difference| ours (muP) vs transformers = {diff:.3g}")
    assert diff <= 1e-4
    nanotron = convert(ckpt, tmp_path / "nt", "--to", "nanotron")
    for source, fmt in ((out, "hf"), (nanotron, "nanotron")):
        back, _ = load_model(convert(source, tmp_path / f"back_{fmt}", "--from", fmt))
        assert back.cfg.parametrization == "sp"
        torch.testing.assert_close(logits(back.eval()), logits(model), rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["hf", "nanotron"])
def test_mup_tied_output_multiplier_cannot_be_exported(fmt, tmp_path, capsys):
    _, ckpt = checkpoint(tmp_path / "ours", parametrization="mup", mup_base_d_model=16)
    err = one_line_error(["--checkpoint", str(ckpt), "--to", fmt, "--out", str(tmp_path / "x")], capsys)
    assert "parametrization mup" in err and "tie_embeddings false" in err
    assert not (tmp_path / "x").exists()
