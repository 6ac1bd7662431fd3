"""The nanotron training backend without nanotron: YAML against the pinned schema, schedules, data, launch,
log parsing, the import back and the refusals (stages.check_nanotron checks the same against nanotron itself)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_config, write_corpus

from stages.core.artifacts import sha256_file, write_json
from stages.core.cli import UserError
from stages.core.record import read_record
from stages.corpus.shards import TrainStream
from stages.interop.nanotron_config import (
    NANOTRON_COMMIT,
    NanotronJob,
    check_trainable,
    first_lr,
    lr_scheduler,
    training_config,
)
from stages.interop.nanotron_data import read_metadata, read_windows, write_stream
from stages.interop.nanotron_run import (
    World,
    check_one_launcher,
    human_number,
    launch_command,
    nanotron_home,
    parse_log,
    world_from_env,
)
from stages.model.checkpoint import load_model
from stages.model.config import MoEConfig
from stages.model.transformer import Transformer, seed_generator
from stages.report.provenance import Tracer
from stages.training.nanotron_backend import metrics_rows
from stages.training.options import TrainConfig
from stages.training.schedule import Schedule, decay_steps, warmup_steps
from stages.workflow.config import load_yaml, validate_config
from stages.workflow.grid import Grid

# The fields of nanotron's config dataclasses at the pinned commit (src/nanotron/config/config.py,
# parallelism_config.py, models_config.py): dacite parses strictly, so a key outside these is an error;
# required = no default there.
SCHEMA = {
    "Config": ({"general", "parallelism", "model"}, {
        "tokenizer", "checkpoints", "logging", "metrics_logging", "tokens", "optimizer", "data_stages", "profiler",
        "lighteval", "s3_upload"}),
    "general": ({"project"}, {"run", "seed", "step", "consumed_train_samples", "benchmark_csv_path",
                              "ignore_sanity_checks"}),
    "parallelism": ({"dp", "pp", "tp"}, {"pp_engine", "tp_mode", "tp_linear_async_communication", "recompute_layer",
                                         "tp_recompute_allgather", "expert_parallel_size", "context_parallel_size"}),
    "model": ({"model_config", "init_method"}, {"dtype", "make_vocab_size_divisible_by", "ddp_bucket_cap_mb"}),
    "tokenizer": (set(), {"tokenizer_name_or_path", "tokenizer_revision", "tokenizer_max_length"}),
    "checkpoints": ({"checkpoints_path", "checkpoint_interval"}, {
        "save_initial_state", "save_final_state", "resume_checkpoint_path", "load_lr_scheduler", "load_optimizer",
        "checkpoints_path_is_shared_file_system"}),
    "logging": (set(), {"log_level", "log_level_replica", "iteration_step_info_interval"}),
    "tokens": ({"sequence_length", "train_steps", "micro_batch_size", "batch_accumulation_per_replica"}, {
        "val_check_interval", "limit_val_batches", "limit_test_batches"}),
    "optimizer": ({"optimizer_factory", "zero_stage", "weight_decay", "clip_grad", "accumulate_grad_in_fp32",
                   "learning_rate_scheduler"}, {"weight_decay_exclude_named_params"}),
    "optimizer_factory": ({"adam_eps", "adam_beta1", "adam_beta2", "torch_adam_is_fused"}, {"name"}),
    "learning_rate_scheduler": ({"learning_rate"}, {"lr_warmup_steps", "lr_warmup_style", "lr_decay_style",
                                                    "lr_decay_steps", "lr_decay_starting_step", "min_decay_lr"}),
    "data_stage": ({"name", "start_training_step", "data"}, {"sequence_length"}),
    "data": ({"dataset", "seed"}, {"num_loading_workers"}),
    "dataset": ({"dataset_folder"}, {
        "dataset_weights", "dataset_read_path", "tokenizer_name", "vocab_size", "token_size_in_bytes",
        "return_positions", "skip_in_stream", "pad_samples_to_global_batch_size", "dataset_max_tokens",
        "shuffle_files", "use_old_brrr_dataloader"}),
    "model_config": (set(), {
        "bos_token_id", "eos_token_id", "hidden_act", "hidden_size", "initializer_range", "intermediate_size",
        "is_qwen2_config", "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
        "num_key_value_heads", "pad_token_id", "pretraining_tp", "rms_norm_eps", "rope_scaling", "rope_theta",
        "rope_interleaved", "rope_seq_len_interpolation_factor", "tie_word_embeddings", "use_cache", "vocab_size",
        "_attn_implementation", "flex_attention_mask", "attention_bias", "sliding_window_size", "z_loss_enabled",
        "z_loss_coefficient", "no_rope_layer", "_fused_rotary_emb", "_fused_rms_norm", "_use_qkv_packed",
        "_use_doc_masking", "log_attn_probs", "ring_attn_heads_k_stride", "moe_config"}),
    "moe_config": (set(), {"num_experts", "top_k", "moe_intermediate_size", "shared_expert_intermediate_size",
                           "router_aux_loss_coef", "layers", "enable_shared_expert", "token_dispatcher_type"}),
}  # fmt: skip

MOE = MoEConfig(experts=4, top_k=2, granularity=2, shared_expert_d_ff=32, aux_loss_coef=0.0)
TRAIN = TrainConfig(
    seq_len=16, batch_size=8, lr=0.004, min_lr_ratio=0.1, warmup_steps=3, lr_policy="wsd", decay_frac=0.25,
    weight_decay=0.05, beta1=0.85, beta2=0.97, adam_eps=1e-7, grad_clip=0.5, device="cuda", dtype="bf16",
    log_every=2, backend="nanotron",
)  # fmt: skip


def nanotron_job(tmp_path: Path, train: TrainConfig = TRAIN, steps: int = 20, dp: int = 2, micro: int = 2, **kw):
    warmup = warmup_steps(steps, train.warmup_frac, fixed=train.warmup_steps)
    fields = dict(
        run_id="moe/s/d1_1M/e4/d2_1M",
        seed=(1 << 62) + 5,
        data_seed=7,
        model=tiny_config(MOE),
        train=train,
        steps=steps,
        warmup=warmup,
        decay=decay_steps(steps, warmup, train.decay_frac) if train.lr_policy == "wsd" else 0,
        dp=dp,
        micro_batch=micro,
        eot_id=0,
        init=tmp_path / "init",
        data=tmp_path / "data",
        tokenizer=tmp_path / "tok",
        token_size=2,
        checkpoints=tmp_path / "ckpt",
        checkpoint_interval=10,
    )
    fields.update(kw)
    return NanotronJob(**fields)


def check_section(name: str, section: dict) -> None:
    required, optional = SCHEMA[name]
    assert required <= set(section), f"{name}: missing {required - set(section)}"
    assert set(section) <= required | optional, f"{name}: unknown {set(section) - required - optional}"


def test_yaml_has_every_section_of_the_pinned_schema_and_our_values(tmp_path):
    nt = nanotron_job(tmp_path)
    cfg = training_config(nt)
    check_section("Config", cfg)
    for name in ("general", "parallelism", "model", "tokenizer", "checkpoints", "logging", "tokens", "optimizer"):
        check_section(name, cfg[name])
    check_section("optimizer_factory", cfg["optimizer"]["optimizer_factory"])
    check_section("learning_rate_scheduler", cfg["optimizer"]["learning_rate_scheduler"])
    (stage,) = cfg["data_stages"]
    check_section("data_stage", stage)
    check_section("data", stage["data"])
    check_section("dataset", stage["data"]["dataset"])
    check_section("model_config", cfg["model"]["model_config"])
    check_section("moe_config", cfg["model"]["model_config"]["moe_config"])

    assert cfg["general"]["seed"] < 1 << 31 and cfg["general"]["run"] == "moe-s-d1_1M-e4-d2_1M"
    assert cfg["parallelism"] | {} == {**cfg["parallelism"], "dp": 2, "tp": 1, "pp": 1, "expert_parallel_size": 1}
    tokens = cfg["tokens"]
    assert (tokens["sequence_length"], tokens["train_steps"]) == (16, 20)
    assert tokens["micro_batch_size"] * tokens["batch_accumulation_per_replica"] * 2 == TRAIN.batch_size
    opt = cfg["optimizer"]
    assert (opt["weight_decay"], opt["clip_grad"], opt["zero_stage"]) == (0.05, 0.5, 0)
    assert opt["optimizer_factory"] == {
        "name": "adamW", "adam_eps": 1e-7, "adam_beta1": 0.85, "adam_beta2": 0.97, "torch_adam_is_fused": True,
    }  # fmt: skip
    mc = cfg["model"]["model_config"]
    assert (mc["hidden_size"], mc["intermediate_size"], mc["num_hidden_layers"], mc["vocab_size"]) == (32, 64, 2, 96)
    assert (mc["_use_doc_masking"], mc["rope_interleaved"], mc["tie_word_embeddings"]) == (False, False, True)
    assert mc["moe_config"] | {} == {
        **mc["moe_config"], "num_experts": 4, "top_k": 2, "moe_intermediate_size": 32, "enable_shared_expert": True,
        "shared_expert_intermediate_size": 32, "layers": [0, 1], "router_aux_loss_coef": 0.0,
    }  # fmt: skip
    assert cfg["model"]["init_method"] == {"path": str((tmp_path / "init").resolve())}
    assert cfg["checkpoints"]["resume_checkpoint_path"] is None and cfg["checkpoints"]["checkpoint_interval"] == 10
    dataset = stage["data"]["dataset"]
    assert stage["start_training_step"] == 1 and dataset["dataset_folder"] == [str((tmp_path / "data").resolve())]
    assert dataset["tokenizer_name"] == cfg["tokenizer"]["tokenizer_name_or_path"]
    assert (dataset["use_old_brrr_dataloader"], dataset["shuffle_files"], dataset["return_positions"]) == (
        True,
        False,
        False,
    )
    assert json.loads(json.dumps(cfg)) == cfg  # plain YAML types only


def test_batch_and_micro_batch_must_divide(tmp_path):
    with pytest.raises(UserError, match="train.batch_size 8: not divisible by the 3"):
        nanotron_job(tmp_path, dp=3)
    with pytest.raises(UserError, match="train.micro_batch_size 3: must divide the 4 sequences per GPU"):
        nanotron_job(tmp_path, micro=3)


def nanotron_lr(args: dict, step: int) -> float:
    """nanotron's documented schedule (LRSchedulerArgs; helpers.lr_scheduler_builder): the lr of 0-based step s."""
    peak, floor, warm = args["learning_rate"], args["min_decay_lr"], args["lr_warmup_steps"]
    start, n = args["lr_decay_starting_step"], args["lr_decay_steps"]
    if step <= warm:
        return peak if args["lr_warmup_style"] == "constant" else peak * step / max(warm, 1)
    if step < start:
        return peak
    if step < start + n:
        p = (step - start) / n
        shape = args["lr_decay_style"]
        scale = {"linear": 1 - p, "cosine": (1 + math.cos(math.pi * p)) / 2, "1-sqrt": 1 - math.sqrt(p)}[shape]
        return floor + (peak - floor) * scale
    return floor


SCHEDULES = [("cosine", ""), ("wsd", "1-sqrt"), ("wsd", "linear"), ("wsd", "cosine"), ("constant_min", "")]


@pytest.mark.parametrize("policy,shape", SCHEDULES)
def test_scheduler_is_ours_after_the_warmup_and_one_step_late_in_it(policy, shape):
    train = dataclasses.replace(TRAIN, lr_policy=policy, decay_shape=shape or "1-sqrt")
    steps = 40
    warmup = warmup_steps(steps, train.warmup_frac, fixed=train.warmup_steps)
    decay = decay_steps(steps, warmup, train.decay_frac)
    args = lr_scheduler(train, steps, warmup, decay if policy == "wsd" else 0)
    ours = Schedule(policy, train.lr, train.lr * train.min_lr_ratio, steps, warmup, 0, decay, train.decay_shape)
    theirs = [nanotron_lr(args, s) for s in range(steps)]
    warm = 0 if policy == "constant_min" else warmup
    assert theirs[warm:] == pytest.approx([ours.lr(s) for s in range(warm, steps)], rel=1e-12, abs=1e-15)
    assert theirs[1 : warm + 1] == pytest.approx([ours.lr(s) for s in range(warm)], rel=1e-12)
    assert theirs[0] == first_lr(args) == (0.0 if warm else ours.lr(0))


def tokenizer_corpus(directory: Path, vocab: int = 96) -> Path:
    """A corpus whose tokenizer.json is a real one (word-level, with the end-of-text token nanotron needs)."""
    from tokenizers import Tokenizer, models

    write_corpus(directory, vocab=vocab)
    words = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, vocab)}}
    Tokenizer(models.WordLevel(words, unk_token="<|endoftext|>")).save(str(directory / "tokenizer.json"))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["tokenizer"]["sha256"] = sha256_file(directory / "tokenizer.json")
    write_json(directory / "manifest.json", manifest)
    return directory


@pytest.mark.parametrize("dtype", ["<u2", "<u4"])
def test_converted_stream_reads_back_as_our_windows_in_order(tmp_path, dtype):
    tokens = np.arange(5000, dtype=np.int64) % 300
    stream = TrainStream(tokens, 16, seed=3)
    path = write_stream(stream, start=37, count=24, dtype=np.dtype(dtype), tokenizer_name="/tok", out=tmp_path / "d")
    size = np.dtype(dtype).itemsize
    assert path.stat().st_size == 24 * 17 * size
    assert np.array_equal(read_windows(tmp_path / "d", 16, size), stream.batch(37, 24).numpy())
    ends = np.fromfile(tmp_path / "d" / "stream.ds.index", dtype="<u8")
    assert ends.tolist() == [17 * (i + 1) for i in range(24)]
    assert read_metadata(tmp_path / "d") == ("/tok", size, 24 * 17)


def test_converted_stream_with_datatrove_reader(tmp_path):
    dataset_module = pytest.importorskip("datatrove.utils.dataset")
    stream = TrainStream(np.arange(3000, dtype=np.int64) % 200, 8, seed=1)
    write_stream(stream, 0, 40, np.dtype("<u2"), "/tok", tmp_path / "d")
    ds = dataset_module.DatatroveFolderDataset(str(tmp_path / "d"), 8, filename_pattern="*.ds", token_size=2)
    got = np.stack([np.asarray(ds[i]["input_ids"]) for i in range(len(ds))])
    assert np.array_equal(got, stream.batch(0, 40).numpy())


def test_launch_commands_single_node_and_slurm(tmp_path):
    home, config = Path("/opt/nanotron"), Path("/run/config.yaml")
    world = world_from_env({"NANOTRON_NPROC_PER_NODE": "4", "SLURM_GPUS_ON_NODE": "8"})
    assert world == World(4)
    assert launch_command(home, config, world) == [
        "torchrun", "--standalone", "--nnodes", "1", "--nproc_per_node", "4",
        "/opt/nanotron/run_train.py", "--config-file", "/run/config.yaml",
    ]  # fmt: skip
    assert world_from_env({"CUDA_VISIBLE_DEVICES": "0,1,2"}).size == 3
    assert world_from_env({}).size == 1
    slurm = {
        "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8", "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "4242", "PATH": "",  # no scontrol: the node list is read by hand
    }  # fmt: skip
    world = world_from_env(slurm)
    assert (world.size, world.master_addr, world.port, world.job_id) == (16, "gpu07", 29500, "4242")
    assert launch_command(home, config, world) == [
        "srun", "--nodes", "2", "--ntasks", "2", "--ntasks-per-node", "1",
        "torchrun", "--nnodes", "2", "--nproc_per_node", "8", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", "gpu07:29500", "--rdzv_id", "4242", "--max_restarts", "0",
        "/opt/nanotron/run_train.py", "--config-file", "/run/config.yaml",
    ]  # fmt: skip
    with pytest.raises(UserError, match="SLURM_GPUS_ON_NODE='x'"):
        world_from_env({"SLURM_GPUS_ON_NODE": "x"})


def test_one_launcher_per_job():
    check_one_launcher({"WORLD_SIZE": "1", "SLURM_STEP_NUM_TASKS": "1"})
    with pytest.raises(UserError, match="WORLD_SIZE=4: the nanotron backend runs one process per job"):
        check_one_launcher({"WORLD_SIZE": "4"})


def test_missing_nanotron_is_one_line(tmp_path):
    with pytest.raises(UserError, match=f"NANOTRON_HOME is not set;.*checkout {NANOTRON_COMMIT}") as err:
        nanotron_home({})
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no run_train.py there"):
        nanotron_home({"NANOTRON_HOME": str(tmp_path)})


# Lines as nanotron's LoggerWriter writes them (its human_format), with the colour codes of its formatter.
LOG = """\
\x1b[2;3m2026-12-01 00:57:35,214 [INFO|DP=0|TP=0]\x1b[0m: Config:
\x1b[2;3m2026-12-01 00:57:35,214 [INFO|DP=0|TP=0]\x1b[0m: iteration: 1 / 4 | consumed_tokens: 65.5K | \
time_per_iteration_ms: 1.23K | tokens_per_sec: 53.1K | tokens_per_sec_per_gpu: 6.64K | global_batch_size: 65.5K | \
grad_norm: 3.46 | lm_loss: 7.62 | lr: 0 | model_tflops_per_gpu: 123 | eta: 0:01:28
\x1b[2;3m2026-12-01 00:57:36,214 [INFO|DP=0|TP=0]\x1b[0m: iteration: 2 / 4 | consumed_tokens: 131K | \
grad_norm: 3.1 | lm_loss: 7.59 | lr: 3e-06 | eta: 0:01:27
\x1b[2;3m2026-12-01 00:57:37,214 [INFO|DP=0|TP=0]\x1b[0m: iteration: 3 / 4 | consumed_tokens: 197K | \
grad_norm: 1.23 | lm_loss: 6.23 | lr: 3.6e-05 | eta: 0:01:26
2026-12-01 00:59:00,000 [INFO]: iteration: 3 / 4 | consumed_tokens: 197K | grad_norm: 1.2 | lm_loss: 6.2 | lr: 3.6e-05
2026-12-01 00:59:01,000 [INFO]: iteration: 4 / 4 | consumed_tokens: 262K | grad_norm: 0.98 | lm_loss: 5.91 | lr: 6e-05
"""


def test_log_parser_reads_nanotron_lines_last_one_wins():
    log = parse_log(LOG)
    assert sorted(log) == [1, 2, 3, 4]
    assert log[1]["lm_loss"] == 7.62 and log[1]["lr"] == 0.0 and log[1]["consumed_tokens"] == 65500.0
    assert log[2]["lr"] == 3e-06 and log[1]["time_per_iteration_ms"] == 1230.0
    assert log[3]["lm_loss"] == 6.2  # the resumed attempt's line replaces the first
    assert "eta" not in log[1]
    assert human_number("1.05M") == 1.05e6 and human_number("1.2e-05") == 1.2e-05


def test_metrics_rows_shift_the_logged_lr_to_the_step_it_was_used(tmp_path):
    nt = nanotron_job(tmp_path, train=dataclasses.replace(TRAIN, log_every=2), steps=4)
    rows = metrics_rows(parse_log(LOG), nt, tmp_path / "log")
    assert [r["step"] for r in rows] == [1, 3, 4]  # every log_every steps and the last
    assert [r["lr"] for r in rows] == [0.0, 3e-06, 3.6e-05]
    assert [r["train_loss"] for r in rows] == [7.62, 6.2, 5.91]
    assert rows[-1]["tokens"] == 4 * TRAIN.batch_size * TRAIN.seq_len
    with pytest.raises(UserError, match="no 'iteration: 5 / 6'"):
        metrics_rows(parse_log(LOG), nanotron_job(tmp_path, steps=6), tmp_path / "log")


REFUSED = [
    ({"moe": dataclasses.replace(MOE, norm_topk_prob=True)}, {}, "moe.norm_topk_prob true"),
    ({"moe": dataclasses.replace(MOE, aux_loss_coef=0.01)}, {}, "moe.aux_loss_coef 0.01: nanotron main has no"),
    ({"moe": dataclasses.replace(MOE, z_loss_coef=0.001)}, {}, "moe.z_loss_coef"),
    ({"moe": dataclasses.replace(MOE, capacity_factor=1.25)}, {}, "moe.capacity_factor 1.25"),
    ({"parametrization": "mup", "mup_base_d_model": 16}, {}, "model.parametrization mup"),
    ({}, {"device": "cpu"}, "train.device cpu"),
    ({}, {"dtype": "fp32"}, "train.dtype fp32"),
    ({}, {"lr_policy": "continue"}, "lr_policy continue"),
    ({}, {"tensorboard": True}, "train.tensorboard"),
]


@pytest.mark.parametrize("model,train,message", REFUSED)
def test_refusals_are_one_line(model, train, message):
    cfg = tiny_config(model.pop("moe", MOE), **model)
    with pytest.raises(UserError, match=f"^train.backend nanotron: {message}") as err:
        check_trainable(cfg, dataclasses.replace(TRAIN, **train))
    assert "\n" not in str(err.value)
    check_trainable(tiny_config(MOE), TRAIN)  # the same without it trains


def paper_config(*overlays: str) -> dict:
    cfg = load_yaml(REPO / "config" / "config.yaml")
    for name in overlays:
        for key, value in load_yaml(REPO / "config" / name).items():
            cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def test_config_validation_refuses_what_nanotron_cannot_train():
    cfg = paper_config("paper.yaml")
    cfg["train"] = {**cfg["train"], "backend": "nanotron"}
    with pytest.raises(UserError, match=r"^config key 'moe.e8k2' \(grid.upcycled, model 's'\):.*norm_topk_prob"):
        validate_config(cfg)
    cfg = paper_config()
    cfg["train"] = {**cfg["train"], "backend": "nanotron"}
    with pytest.raises(UserError, match="config key 'models.xs'.*train.device cpu"):
        validate_config(cfg)


def test_paper_nanotron_overlay_validates_and_trains_every_budget_as_one_run():
    overlay = paper_config("paper.yaml", "paper_nanotron.yaml")
    for name in ("e8k2", "e64k8_fg"):  # the overlay's moe entries replace only their keys
        overlay["moe"][name] = {**paper_config("paper.yaml")["moe"][name], **overlay["moe"][name]}
    grid = Grid(validate_config(overlay))
    assert grid.segments == {} and all(grid.branch_step(r) == 0 for r in grid.runs)
    assert Grid(validate_config(paper_config("paper.yaml"))).segments  # the torch backend branches its cooldowns


def fake_nanotron(home: Path) -> Path:
    """A stand-in nanotron checkout: run_train.py "trains" by saving the init weights as its final checkpoint and
    logging each step as nanotron does, after checking that the converted data holds the whole run."""
    home.mkdir(parents=True)
    (home / "run_train.py").write_text(
        """import argparse, pathlib, shutil, yaml
p = argparse.ArgumentParser(); p.add_argument("--config-file"); a = p.parse_args()
cfg = yaml.safe_load(open(a.config_file))
steps, tok = cfg["tokens"]["train_steps"], cfg["tokens"]
data = pathlib.Path(cfg["data_stages"][0]["data"]["dataset"]["dataset_folder"][0]) / "stream.ds"
gbs = tok["micro_batch_size"] * tok["batch_accumulation_per_replica"] * cfg["parallelism"]["dp"]
assert data.stat().st_size == steps * gbs * (tok["sequence_length"] + 1) * 2, data.stat().st_size
ckpt = pathlib.Path(cfg["checkpoints"]["checkpoints_path"])
shutil.copytree(cfg["model"]["init_method"]["path"], ckpt / str(steps))
(ckpt / "latest.txt").write_text(str(steps))
for i in range(1, steps + 1):
    print(f"\\x1b[2;3m2026 [INFO|DP=0]\\x1b[0m: iteration: {i} / {steps} | consumed_tokens: 1K | grad_norm: 0.5 "
          f"| lm_loss: {5 - i / 100:.3g} | lr: {i * 1e-4:.3g} | eta: 0:00:01")
"""
    )
    return home


def test_train_with_nanotron_backend_imports_checkpoint_record_and_metrics(tmp_path, monkeypatch):
    from stages.train import main

    corpus = tokenizer_corpus(tmp_path / "corpus")
    monkeypatch.setenv("NANOTRON_HOME", str(fake_nanotron(tmp_path / "nanotron")))
    monkeypatch.setenv("NANOTRON_NPROC_PER_NODE", "1")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    model = {"n_layer": 2, "d_model": 32, "n_head": 4, "d_ff": 64, "moe": dataclasses.asdict(MOE)}
    train = dataclasses.asdict(dataclasses.replace(TRAIN, log_every=2))
    out = tmp_path / "run"
    args = ["--kind", "scratch_moe", "--run-id", "scratch/t/e4/d_2560", "--data", str(corpus), "--tokens", "2560"]
    args += ["--model", json.dumps(model), "--train", json.dumps(train), "--seed", "11", "--data-seed", "3"]
    main([*args, "--out", str(out), "--work-dir", str(tmp_path / "work")])

    imported, record = load_model(out)
    fresh = Transformer(imported.cfg)
    fresh.init_weights(seed_generator(11))  # the fake trained nothing: the import is the run's own fresh init
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, imported.state_dict()[name]), name
    assert record.backend == "nanotron@unknown" and record.kind == "scratch_moe"
    assert (record.steps, record.tokens, record.data.end_sequence) == (20, 2560, 160)
    assert record.schedule["decay_steps"] == 5 and read_record(out).train["backend"] == "nanotron"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [*range(1, 20, 2), 20]
    assert float(rows[0]["lr"]) == 0.0 and float(rows[1]["lr"]) == pytest.approx(2e-4)
    assert float(rows[-1]["train_loss"]) == 4.8 and rows[0]["frac_l0_e0"] == ""
    assert (out / "nanotron.yaml").exists() and not (tmp_path / "work").exists()
    tracer = Tracer(tmp_path)
    tracer.trace(out)
    assert "trained by nanotron@unknown" in "\n".join(tracer.lines)  # stages.provenance names the backend


def test_stable_segments_are_refused_by_the_backend(tmp_path, monkeypatch):
    from stages.train import main

    corpus = tokenizer_corpus(tmp_path / "corpus")
    monkeypatch.setenv("NANOTRON_HOME", str(fake_nanotron(tmp_path / "nanotron")))
    args = ["--kind", "dense", "--run-id", "dense/t/d1_2560", "--data", str(corpus), "--tokens", "2560"]
    args += ["--model", json.dumps({"n_layer": 1, "d_model": 32, "n_head": 4, "d_ff": 64})]
    args += ["--train", json.dumps(dataclasses.asdict(TRAIN)), "--seed", "1", "--data-seed", "2"]
    with pytest.raises(UserError, match="--stop-step / --start-state: the nanotron backend"):
        main([*args, "--stop-step", "5", "--state-out", str(tmp_path / "b.pt")])
