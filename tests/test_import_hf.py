"""Importing dense Hugging Face models (Qwen2, Llama, Mistral) as the parent of an upcycling study: the same
logits as transformers, one-line refusals naming the key, exact round trips, honest sunk compute, and
corpora tokenized with the parent's tokenizer (uint32 shards when its ids do not fit uint16)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_snakemake, tiny_config
from safetensors.torch import load_file

from stages.core.artifacts import read_json, sha256_file, write_json
from stages.core.cli import UserError, run
from stages.core.record import Ancestor, RunRecord, read_record
from stages.corpus.shards import open_corpus
from stages.data import main as data_main
from stages.export import main as export_main
from stages.interop.hf_config import dense_config
from stages.model.checkpoint import load_model, save_checkpoint
from stages.model.compute import flops_per_token
from stages.model.config import MoEConfig
from stages.model.transformer import Transformer, seed_generator
from stages.report.runs_table import row_for
from stages.training.evaluation import read_checked_shard

transformers = pytest.importorskip("transformers")

VOCAB = 128
TOKENIZER_VOCAB = 300  # a byte-level BPE needs 256 byte tokens: models that carry a tokenizer have 320 rows
TOKENS = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))
SHAPE = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    num_key_value_heads=4,
    rms_norm_eps=1e-5,
    rope_theta=500.0,
)
ARCHS = {"qwen2": "Qwen2", "llama": "Llama", "mistral": "Mistral"}
CASES = {
    "tied_mha": dict(tie_word_embeddings=True, num_key_value_heads=4),
    "untied_gqa": dict(tie_word_embeddings=False, num_key_value_heads=2),
}


def hf_model(arch: str, seed: int = 0, vocab: int = VOCAB, **overrides):
    """A random transformers model of ``arch`` whose norms and biases are far from their initial constants (a
    swapped or dropped tensor changes the logits)."""
    config_class = getattr(transformers, f"{ARCHS[arch]}Config")
    model_class = getattr(transformers, f"{ARCHS[arch]}ForCausalLM")
    spec = {**SHAPE, "vocab_size": vocab, **overrides}
    if arch == "mistral":
        spec.setdefault("sliding_window", None)
    torch.manual_seed(seed)
    model = model_class(config_class(**spec)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return model


def save_hf(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


def import_(source: Path, out: Path, *flags: str) -> Path:
    export_main(["--checkpoint", str(source), "--from", "hf", "--out", str(out), *flags])
    return out


def logits(model: torch.nn.Module, tokens: torch.Tensor = TOKENS) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def one_line_error(argv: list[str], capsys, main=export_main) -> str:
    capsys.readouterr()  # drop what came before (transformers' progress bars)
    with pytest.raises(SystemExit) as exc:
        run(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_import_gives_the_logits_of_transformers(arch, case, tmp_path):
    reference = hf_model(arch, **CASES[case])
    ours, record = load_model(import_(save_hf(reference, tmp_path / "hf"), tmp_path / "ours"))
    assert ours.cfg.tie_embeddings == CASES[case]["tie_word_embeddings"]
    assert ours.cfg.n_kv_head == CASES[case]["num_key_value_heads"]
    assert ours.cfg.qkv_bias == (arch == "qwen2") and ours.cfg.rope_theta == 500.0
    assert record.kind == "import" and record.source.format == "hf"
    torch.testing.assert_close(logits(ours.eval()), logits(reference), rtol=0, atol=1e-5)


def test_qwen2_vocabulary_beyond_uint16_imports(tmp_path):
    reference = hf_model("qwen2", vocab=70_000, tie_word_embeddings=True)
    ours, _ = load_model(import_(save_hf(reference, tmp_path / "hf"), tmp_path / "ours"))
    high = torch.tensor([[69_999, 65_536, 5, 70_000 - 2]])
    assert ours.cfg.vocab_size == 70_000
    torch.testing.assert_close(logits(ours.eval(), high), logits(reference, high), rtol=0, atol=1e-5)


def test_pytorch_bin_single_and_sharded_read_like_safetensors(tmp_path):
    reference = hf_model("llama", tie_word_embeddings=False, num_key_value_heads=2)
    ref_dir = save_hf(reference, tmp_path / "hf")
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    single, sharded = tmp_path / "bin", tmp_path / "bin_sharded"
    for directory in (single, sharded):
        directory.mkdir()
        (directory / "config.json").write_bytes((ref_dir / "config.json").read_bytes())
    torch.save(state, single / "pytorch_model.bin")
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for file, keys in halves.items():
        torch.save({k: state[k] for k in keys}, sharded / file)
    write_json(sharded / "pytorch_model.bin.index.json", {"weight_map": {k: f for f, ks in halves.items() for k in ks}})
    expected = load_file(import_(ref_dir, tmp_path / "from_safetensors") / "model.safetensors")
    for directory in (single, sharded):
        got = load_file(import_(directory, tmp_path / f"from_{directory.name}") / "model.safetensors")
        assert sorted(got) == sorted(expected) and all(torch.equal(got[k], expected[k]) for k in got)
    record = read_record(tmp_path / "from_bin_sharded")
    assert set(record.source.sha256) == {*halves, "config.json"}


def edit_config(directory: Path, **changes) -> Path:
    config = read_json(directory / "config.json")
    config.update(changes)
    write_json(directory / "config.json", config)
    return directory


@pytest.mark.parametrize(
    ("arch", "changes", "named"),
    [
        ("llama", {"attention_bias": True}, "attention_bias"),
        ("llama", {"mlp_bias": True}, "mlp_bias"),
        ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "rope_parameters"),
        ("llama", {"hidden_act": "gelu"}, "hidden_act"),
        ("llama", {"head_dim": 16}, "head_dim"),
        ("llama", {"model_type": "gpt2"}, "model_type"),
        ("qwen2", {"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        ("mistral", {"sliding_window": 16}, "sliding_window"),
        ("qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1}, "sliding_window"),
        ("qwen2", {"layer_types": ["full_attention", "sliding_attention"], "sliding_window": 16}, "sliding_window"),
        # values of the wrong type or size: one line, not a ZeroDivisionError or TypeError from the arithmetic
        ("llama", {"num_attention_heads": 0}, "num_attention_heads 0: expected an integer >= 1"),
        ("llama", {"hidden_size": "32"}, "hidden_size '32': expected an integer >= 1"),
        ("qwen2", {"num_hidden_layers": "2"}, "num_hidden_layers '2': expected an integer >= 1"),
        ("mistral", {"max_position_embeddings": "64"}, "max_position_embeddings '64': expected an integer"),
        ("llama", {"intermediate_size": 0}, "intermediate_size 0: expected an integer >= 1"),
        ("llama", {"rms_norm_eps": "1e-5"}, "rms_norm_eps '1e-5': expected a number > 0"),
        ("qwen2", {"rope_parameters": {"rope_type": "default", "rope_theta": "1e4"}}, "rope_theta '1e4': expected"),
        ("qwen2", {"use_sliding_window": True, "max_window_layers": "1"}, "max_window_layers '1': expected an integer"),
        ("mistral", {"sliding_window": "16"}, "sliding_window '16': expected an integer"),
    ],
)
def test_refusals_are_one_line_naming_the_key(arch, changes, named, tmp_path, capsys):
    directory = edit_config(save_hf(hf_model(arch), tmp_path / "hf"), **changes)
    err = one_line_error(["--checkpoint", str(directory), "--from", "hf", "--out", str(tmp_path / "x")], capsys)
    assert named in err and str(directory / "config.json") in err
    assert not (tmp_path / "x").exists()


def test_a_window_that_covers_the_context_is_full_attention(tmp_path, capsys):
    """Mistral's window of 16 is refused at its 64-token context, accepted at 16 (the same function there)."""
    reference = hf_model("mistral", sliding_window=16, num_key_value_heads=2)
    directory = save_hf(reference, tmp_path / "hf")
    err = one_line_error(["--checkpoint", str(directory), "--from", "hf", "--out", str(tmp_path / "x")], capsys)
    assert "sliding_window 16" in err and "64" in err
    ours, _ = load_model(import_(directory, tmp_path / "ours", "--max-seq-len", "16"))
    short = TOKENS[:, :16]
    assert ours.cfg.max_seq_len == 16
    torch.testing.assert_close(logits(ours.eval(), short), logits(reference, short), rtol=0, atol=1e-5)
    # a Qwen2 window only on layers from max_window_layers on: none of these two layers slides
    qwen = edit_config(
        save_hf(hf_model("qwen2"), tmp_path / "qwen"), use_sliding_window=True, sliding_window=8, max_window_layers=2
    )
    assert load_model(import_(qwen, tmp_path / "qwen_ours"))[0].cfg.max_seq_len == 64


def test_import_only_flags_are_refused_elsewhere(tmp_path, capsys):
    ours = tmp_path / "ours"
    save_checkpoint(
        ours, Transformer(tiny_config()), RunRecord(run_id="x", kind="dense", code_hash="", torch_version="")
    )
    argv = ["--checkpoint", str(ours), "--to", "hf", "--out", str(tmp_path / "x"), "--tokens", "1M"]
    assert "--tokens: only an import --from hf" in one_line_error(argv, capsys)


def write_tokenizer(directory: Path, eos: str = "</s>") -> Path:
    """A small byte-level BPE trained here with ``tokenizers`` (nothing downloaded), saved as tokenizer.json with
    a tokenizer_config.json naming its eos token, as transformers saves a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=[eos, "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT.splitlines() * 3, trainer=trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    write_json(directory / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos})
    return directory / "tokenizer.json"


TEXT = "\n".join(
    [
        "The miller woke before the sun and walked down to the river.",
        "Water turned the old wheel, and the wheel turned the stones that ground the grain.",
        "In the village the baker waited for flour, and the children waited for bread.",
        "A heron stood in the shallows and did not move until a fish came near.",
    ]
)


def test_round_trip_export_of_the_import_has_the_original_logits(tmp_path):
    """A Llama imported and exported again is a Qwen2 model (zero q/k/v biases) with Llama's logits."""
    reference = hf_model("llama", vocab=320, tie_word_embeddings=False, num_key_value_heads=2)
    directory = save_hf(reference, tmp_path / "hf")
    tokenizer = write_tokenizer(directory)
    ours = import_(directory, tmp_path / "ours")
    assert read_record(ours).data.tokenizer_sha256 == sha256_file(tokenizer)
    out = tmp_path / "back"
    export_main(["--checkpoint", str(ours), "--to", "hf", "--out", str(out), "--tokenizer", str(tokenizer)])
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(back).__name__ == "Qwen2ForCausalLM"
    torch.testing.assert_close(logits(back), logits(reference), rtol=0, atol=1e-5)
    again = load_file(import_(out, tmp_path / "again") / "model.safetensors")
    first = load_file(ours / "model.safetensors")
    assert sorted(again) == sorted(first) and all(torch.equal(again[k], first[k]) for k in first)


def test_sunk_compute_is_stated_or_recorded_as_unknown(tmp_path):
    directory = save_hf(hf_model("qwen2"), tmp_path / "hf")
    unknown = read_record(import_(directory, tmp_path / "unknown"))
    assert not unknown.tokens_known and unknown.tokens == 0 and unknown.flops == 0.0
    stated = read_record(import_(directory, tmp_path / "stated", "--tokens", "2T", "--max-seq-len", "32"))
    cfg = load_model(tmp_path / "stated")[0].cfg
    assert stated.tokens_known and stated.tokens == 2 * 10**12 and cfg.max_seq_len == 32
    assert stated.flops == pytest.approx(flops_per_token(cfg, 32, "6N") * 2e12)
    assert stated.as_ancestor().tokens_known and not unknown.as_ancestor().tokens_known


def test_runs_table_leaves_d1_and_total_compute_empty_when_the_parent_is_unknown(tmp_path):
    """An upcycled run whose imported parent's pre-training was not stated: D1, D_total and flops_total are
    NaN (unknown), never the zero a missing number would add; a stated parent counts like a dense run."""
    model = Transformer(tiny_config(moe=MoEConfig(experts=4, top_k=2)))
    model.init_weights(seed_generator(0))
    rows = {}
    for known in (False, True):
        parent = Ancestor(
            run_id="dense/p/d1_1M",
            kind="import",
            tokens=10**6 if known else 0,
            tokens_known=known,
            flops=6.0e6 if known else 0.0,
        )
        record = RunRecord(
            run_id=f"moe/p/{known}",
            kind="upcycled",
            code_hash="",
            torch_version="",
            tokens=4096,
            flops=1.0e5,
            flops_convention="6N",
            lineage=(parent, Ancestor(run_id="upcycled/p", kind="upcycle")),
        )
        ckpt = tmp_path / f"ckpt_{known}"
        save_checkpoint(ckpt, model, record)
        ev = tmp_path / f"eval_{known}.json"
        write_json(ev, {"checkpoint": str(ckpt), "val_loss": 3.0, "tokens": 64, "checkpoint_sha256": ""})
        rows[known] = row_for(ev)
    assert all(math.isnan(rows[False][k]) for k in ("D1", "D_total", "flops_total"))
    assert rows[False]["D2"] == 4096 and rows[False]["flops_run"] == 1.0e5
    assert rows[True]["D1"] == 10**6 and rows[True]["D_total"] == 10**6 + 4096
    assert rows[True]["flops_total"] == 6.0e6 + 1.0e5


def test_data_stage_with_a_parent_tokenizer_writes_uint32_shards(tmp_path, capsys):
    """A parent whose ids exceed uint16: the corpus is encoded with its tokenizer.json (copied byte for byte),
    documents end with its eos token, the shards are uint32 and every reader takes that from the manifest."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted(set(TEXT.replace(",", " ").replace(".", " ").split()))
    vocab = {f"filler{i}": i for i in range(69_000)}
    vocab.update({w: 69_000 + i for i, w in enumerate(words)})
    vocab["[UNK]"], vocab["</s>"] = 69_500, 69_501
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    parent = tmp_path / "parent"
    parent.mkdir()
    tok.save(str(parent / "tokenizer.json"))
    write_json(parent / "config.json", {"model_type": "llama", "vocab_size": 69_632, "eos_token_id": 69_501})
    text = tmp_path / "text"
    text.mkdir()
    for i in range(40):
        (text / f"doc{i}.txt").write_text(TEXT.replace(",", "").replace(".", "") + f"\nfiller{i}\n")
    out = tmp_path / "corpus"
    data_main(["--files", str(text), "--tokenizer", str(parent), "--out", str(out), "--val-fraction", "0.1"])
    corpus = open_corpus(out)
    manifest = corpus.manifest
    assert manifest["token_dtype"] == "uint32-le" and manifest["vocab_size"] == 69_632
    assert manifest["eot_id"] == 69_501 and manifest["tokenizer"]["type"] == "pretrained"
    assert (out / "tokenizer.json").read_bytes() == (parent / "tokenizer.json").read_bytes()
    train = corpus.tokens("train")
    assert train.dtype == np.dtype("<u4") and int(train.max()) >= 65_536
    doc = np.asarray(tok.encode(TEXT.replace(",", "").replace(".", "") + "\nfiller0\n").ids + [69_501])
    assert int((train == 69_501).sum()) == manifest["split"]["train_documents"]
    ids = np.concatenate([train, corpus.tokens("val")])
    assert any(np.array_equal(ids[i : i + len(doc)], doc) for i in np.flatnonzero(ids == doc[0]))
    assert read_checked_shard(out / "val.bin", 69_632, corpus.sha256("tokenizer"), "x").dtype == np.dtype("<u4")
    err = one_line_error(["--files", str(text), "--out", str(tmp_path / "y")], capsys, main=data_main)
    assert "--vocab-size" in err


def test_dense_config_is_torch_free_and_matches_the_import(tmp_path):
    """The workflow reads a parent's shape from its config.json alone; it is the config the import writes."""
    directory = save_hf(hf_model("mistral", num_key_value_heads=2), tmp_path / "hf")
    shape = dense_config(read_json(directory / "config.json"), directory / "config.json", max_seq_len=32)
    ours, _ = load_model(import_(directory, tmp_path / "ours", "--max-seq-len", "32"))
    assert shape == ours.cfg
    with pytest.raises(UserError, match="model_type 'qwen2_moe' is not a dense"):
        dense_config({"model_type": "qwen2_moe"}, directory / "config.json")


@pytest.mark.slow
def test_workflow_upcycles_trains_and_evaluates_an_imported_llama(repo_copy, tmp_path):
    """config/import_hf.yaml's kind of study on a tiny random Llama: the corpus is tokenized with its tokenizer,
    the parent imported at the study's context, upcycled, trained for two D2 budgets and continued densely;
    every run is evaluated and the runs table counts the stated pre-training as D1 and sunk compute."""
    parent = tmp_path / "tinyllama"
    llama = hf_model("llama", vocab=320, tie_word_embeddings=False, num_key_value_heads=2, max_position_embeddings=2048)
    save_hf(llama, parent)
    write_tokenizer(parent)
    text = tmp_path / "text.jsonl"  # one document per line
    text.write_text("".join(json.dumps({"text": f"{TEXT}\nDay {i}.\n"}) + "\n" for i in range(400)))
    study = {
        "study": "imported",
        "parents": {"tinyllama": {"hf": str(parent), "tokens": "1M"}},
        "data": {"corpus": "llamatext", "sources": [], "files": [str(text)], "tokenizer": "tinyllama"},
        "moe": {"e4k2": {"experts": 4, "top_k": 2, "norm_topk_prob": True, "method": "naive"}},
        "train": {
            "seq_len": 32,
            "batch_size": 4,
            "lr_policy": "cosine",
            "dense_cont_lr_policy": "cosine",
            "warmup_steps": 0,  # the default's fixed 78 steps do not end before these 15-step runs: a 5% warmup
            "save_every": 0,
            "eval_every": 0,
        },
        "grid": {
            "dense": None,
            "upcycled": {"models": ["tinyllama"], "moe": ["e4k2"], "d2": ["2K", "4K"]},
            "scratch_moe": None,
            "dense_cont": {"models": ["tinyllama"], "d2": ["2K"]},
            "replicas": None,
        },
        "evaluate": {"max_tokens": 1024},
        "upcycle_eval_tokens": 512,
        "fits": {name: None for name in read_json_yaml(REPO / "config" / "config.yaml")["fits"]},
        "figures": [],
        "planner": None,
    }
    config = tmp_path / "study.yaml"
    config.write_text(json.dumps(study))
    run_snakemake(repo_copy, tmp_path, "--configfile", str(config), "--cores", "2")
    assert "Nothing to be done" in run_snakemake(repo_copy, tmp_path, "--configfile", str(config), "-n").stdout
    root = tmp_path / "results" / "imported"
    manifest = read_json(root / "data" / "llamatext" / "manifest.json")
    assert manifest["tokenizer"]["type"] == "pretrained" and manifest["vocab_size"] == 320
    imported = read_record(root / "dense" / "tinyllama" / "d1_1M")
    assert imported.kind == "import" and imported.tokens == 10**6
    assert load_model(root / "dense" / "tinyllama" / "d1_1M")[0].cfg.max_seq_len == 32
    import pandas as pd

    table = pd.read_csv(root / "tables" / "runs.csv")
    assert sorted(table["run_id"]) == [
        "dense_cont/tinyllama/d1_1M/d2_2K",
        "moe/tinyllama/d1_1M/e4k2/d2_2K",
        "moe/tinyllama/d1_1M/e4k2/d2_4K",
    ]
    assert set(table["D1"]) == {10**6} and (table["flops_total"] > table["flops_run"]).all()
    assert (table["flops_total"] - table["flops_run"]).round().eq(round(imported.flops)).all()  # the sunk import
    assert table["val_loss"].notna().all()
    surgery = read_json(root / "upcycled" / "tinyllama" / "d1_1M" / "e4k2" / "surgery.json")
    assert surgery["moe_val_loss"] == pytest.approx(surgery["dense_val_loss"], abs=1e-4)  # naive top-2: exact


def read_json_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


@pytest.fixture
def parent_study(tmp_path) -> dict:
    """The default config with a tiny Llama parent (its folder in tmp_path) upcycled and continued."""
    from stages.workflow.accounting import merge
    from stages.workflow.config import load_yaml

    parent = save_hf(hf_model("llama", vocab=320, num_key_value_heads=2), tmp_path / "tinyllama")
    write_tokenizer(parent)
    overlay = {
        "parents": {"tinyllama": {"hf": str(parent), "tokens": "1M"}},
        "data": {"tokenizer": "tinyllama"},
        "moe": {"e4k2": {"experts": 4, "top_k": 2, "norm_topk_prob": True, "lr_policy": "cosine"}},
        "grid": {
            "upcycled": {"models": ["tinyllama", "s"], "moe": ["e4k2"], "d1": ["200K"], "d2": ["100K"]},
            "dense_cont": {"models": ["tinyllama"], "d2": ["100K"]},
            "replicas": None,
        },
    }
    return merge(load_yaml(REPO / "config" / "config.yaml"), overlay)


def test_a_parent_is_a_model_of_the_continued_grid_sections(parent_study):
    from stages.workflow.config import model_config, validate_config
    from stages.workflow.grid import Grid

    cfg = validate_config(parent_study)
    grid = Grid(cfg)
    ids = {r.run_id for r in grid.runs if r.model == "tinyllama"}
    assert ids == {"moe/tinyllama/d1_1M/e4k2/d2_100K", "dense_cont/tinyllama/d1_1M/d2_100K"}  # no dense run
    assert "dense/s/d1_200K" in {r.run_id for r in grid.runs}
    assert "results/upcycled/tinyllama/d1_1M/e4k2" in grid.upcycle_inits()
    shape = model_config(cfg, "tinyllama", "e4k2")
    assert shape.vocab_size == 320 and shape.max_seq_len == cfg["train"]["seq_len"] and shape.moe.experts == 4
    assert model_config(cfg, "s").vocab_size == 320  # the study's own models use the parent's vocabulary
    args = grid.import_args("tinyllama")
    assert "--tokens 1M" in args and f"--max-seq-len {cfg['train']['seq_len']}" in args
    assert args.endswith("--out results/dense/tinyllama/d1_1M")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("data.tokenizer", None, "config key 'data.tokenizer': the grid starts from parent 'tinyllama'"),
        ("data.tokenizer", "nope", "config key 'data.tokenizer': 'nope' is not defined under 'parents'"),
        ("grid.dense.models", ["tinyllama"], "config key 'grid.dense.models': 'tinyllama' is an imported parent"),
        ("grid.dense_cont", {"models": ["s"], "d2": ["100K"]}, "config key 'grid.dense_cont.d1': needed"),
        ("parents.tinyllama.tokens", "lots", "config key 'parents.tinyllama.tokens'"),
        ("parents.tinyllama.hf", "/no/such/folder", "config key 'parents.tinyllama.hf': /no/such/folder"),
        ("parents.s", {"hf": "x", "tokens": "1M"}, "config key 'parents.s': also defined under 'models'"),
    ],
)
def test_parent_config_errors_are_one_line_naming_the_key(parent_study, path, value, message):
    from stages.workflow.config import validate_config

    node = parent_study
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(UserError) as info:
        validate_config(parent_study)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"rope_scaling": {"rope_type": "llama3"}}, "rope_scaling"),
        ({"model_type": "mistral", "sliding_window": 64}, "sliding_window 64 is shorter than the context of 128"),
    ],
)
def test_a_parent_refused_by_the_import_is_refused_by_the_config(parent_study, changes, named):
    """The workflow validates a parent with the import's own rules, at the study's context length."""
    from stages.workflow.config import validate_config

    edit_config(Path(parent_study["parents"]["tinyllama"]["hf"]), **changes)
    parent_study["train"]["seq_len"] = 128
    with pytest.raises(UserError) as info:
        validate_config(parent_study)
    assert str(info.value).startswith("config key 'parents.tinyllama.hf': ") and named in str(info.value)
    parent_study["train"]["seq_len"] = 64  # a window that covers the context: full attention, accepted
    if "sliding_window" in changes:
        validate_config(parent_study)


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"num_attention_heads": 0}, "num_attention_heads 0"), ({"hidden_size": "32"}, "hidden_size '32'")],
)
def test_a_parent_config_of_the_wrong_type_is_one_line_while_the_dag_is_built(parent_study, changes, named, tmp_path):
    """The Snakefile validates the config before it builds the DAG: a parent whose config.json would divide by a
    zero or a string ends there in one line naming the parent's key and the config.json key (exit 2)."""
    from stages.workflow.config import validate_config

    edit_config(Path(parent_study["parents"]["tinyllama"]["hf"]), **changes)
    with pytest.raises(UserError) as info:
        validate_config(parent_study)
    assert str(info.value).startswith("config key 'parents.tinyllama.hf': ") and named in str(info.value)
    assert "\n" not in str(info.value)
    if "hidden_size" not in changes:
        return
    (tmp_path / "study.yaml").write_text(json.dumps(parent_study))
    res = run_snakemake(REPO, tmp_path, "-n", "--configfile", str(tmp_path / "study.yaml"), check=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "config key 'parents.tinyllama.hf': " in errors[0] and named in errors[0], errors
