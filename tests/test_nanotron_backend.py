"""The nanotron training backend's files without nanotron: YAML against the pinned schema, schedules, data, launch,
log parsing, the metrics import and the refusals. nanotron's own trainer runs the backend's jobs in
tests/test_nanotron_training.py (stages.check_nanotron checks the files against nanotron itself)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, tiny_config, tokenizer_corpus

from stages.core.cli import UserError
from stages.corpus.shards import TrainStream
from stages.interop.nanotron_config import (
    NANOTRON_COMMIT,
    NanotronJob,
    check_trainable,
    lr_scheduler,
    training_config,
)
from stages.interop.nanotron_data import read_metadata, read_windows, write_stream
from stages.interop.nanotron_run import (
    LOCAL,
    World,
    check_one_launcher,
    checkout_commit,
    human_number,
    launch_command,
    launch_env,
    nanotron_home,
    nanotron_python,
    parse_log,
    world_from_env,
)
from stages.interop.nanotron_run import (
    REPO as LAUNCH_REPO,
)
from stages.model.config import MoEConfig
from stages.training.nanotron_backend import metrics_rows, read_metrics
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
    assert (opt["accumulate_grad_in_fp32"], cfg["model"]["dtype"]) == (True, "bfloat16")
    mc = cfg["model"]["model_config"]
    assert (mc["hidden_size"], mc["intermediate_size"], mc["num_hidden_layers"], mc["vocab_size"]) == (32, 64, 2, 96)
    assert (mc["_use_doc_masking"], mc["rope_interleaved"], mc["tie_word_embeddings"]) == (False, False, True)
    assert mc["pad_token_id"] is None  # nanotron's padding_idx would freeze the end-of-text embedding
    assert mc["moe_config"] | {} == {
        **mc["moe_config"], "num_experts": 4, "top_k": 2, "moe_intermediate_size": 32, "enable_shared_expert": True,
        "shared_expert_intermediate_size": 32, "layers": [0, 1], "router_aux_loss_coef": MOE.aux_loss_coef,
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


def test_cpu_mode_yaml_is_fp32_without_fused_adam_and_always_measures_the_gradient_norm(tmp_path):
    train = dataclasses.replace(TRAIN, device="cpu", dtype="fp32", grad_clip=0.0)
    cfg = training_config(nanotron_job(tmp_path, train=train))
    opt = cfg["optimizer"]
    assert (cfg["model"]["dtype"], opt["accumulate_grad_in_fp32"]) == ("float32", False)
    assert opt["optimizer_factory"]["torch_adam_is_fused"] is False and opt["clip_grad"] == math.inf


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
    assert theirs[0] == (0.0 if warm else ours.lr(0))  # the lag the trainer's own schedule removes


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
    python, config, job = Path("/env/bin/python"), Path("/run/config.yaml"), Path("/run/job.json")
    entry = ["-m", "stages.interop.nanotron_entry", "--config-file", "/run/config.yaml", "--job", "/run/job.json"]
    world = world_from_env({"NANOTRON_NPROC_PER_NODE": "4", "SLURM_GPUS_ON_NODE": "8"})
    assert world == World(4)
    assert launch_command(python, config, job, world) == [
        "/env/bin/python", "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "4",
        *entry,
    ]  # fmt: skip
    assert world_from_env({"CUDA_VISIBLE_DEVICES": "0,1,2"}).size == 3
    assert world_from_env({}).size == 1
    slurm = {
        "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8", "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "4242", "PATH": "",  # no scontrol: the node list is read by hand
    }  # fmt: skip
    world = world_from_env(slurm)
    assert (world.size, world.master_addr, world.port, world.job_id) == (16, "gpu07", 29500, "4242")
    assert launch_command(python, config, job, world) == [
        "srun", "--nodes", "2", "--ntasks", "2", "--ntasks-per-node", "1",
        "/env/bin/python", "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "8",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", "gpu07:29500", "--rdzv_id", "4242", "--max_restarts", "0", *entry,
    ]  # fmt: skip
    env = launch_env({"PATH": "/usr/bin", "PYTHONPATH": "/x"}, Path("/opt/nanotron"), python)
    assert env["PATH"] == "/env/bin:/usr/bin" and env["PYTHONPATH"] == f"{LAUNCH_REPO}:/x"
    assert (env["NANOTRON_HOME"], env["CUDA_DEVICE_MAX_CONNECTIONS"]) == ("/opt/nanotron", "1")
    with pytest.raises(UserError, match="SLURM_GPUS_ON_NODE='x'"):
        world_from_env({"SLURM_GPUS_ON_NODE": "x"})


def test_one_launcher_per_job():
    check_one_launcher({"WORLD_SIZE": "1", "SLURM_STEP_NUM_TASKS": "1"})
    with pytest.raises(UserError, match="WORLD_SIZE=4: the nanotron backend runs one process per job"):
        check_one_launcher({"WORLD_SIZE": "4"})


def test_missing_nanotron_is_one_line(tmp_path):
    with pytest.raises(UserError, match=f"NANOTRON_HOME={tmp_path}: no run_train.py there.*make nanotron-env") as err:
        nanotron_home({"NANOTRON_HOME": str(tmp_path)})
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=f"NANOTRON_PYTHON={tmp_path}/python: no python there") as err:
        nanotron_python({"NANOTRON_PYTHON": str(tmp_path / "python")})
    assert "\n" not in str(err.value)
    assert nanotron_home({}) == LOCAL / "nanotron" and nanotron_python({}) == LOCAL / "venv" / "bin" / "python"


def test_commit_of_an_unpacked_archive_is_its_recorded_one(tmp_path):
    assert checkout_commit(tmp_path) == "unknown"
    (tmp_path / ".commit").write_text(NANOTRON_COMMIT + "\n")
    assert checkout_commit(tmp_path) == NANOTRON_COMMIT
    assert checkout_commit(LOCAL / "nanotron") == NANOTRON_COMMIT  # what make nanotron-env unpacked


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


def test_metrics_rows_come_from_the_trainers_full_precision_lines_last_one_wins(tmp_path):
    nt = nanotron_job(tmp_path, train=dataclasses.replace(TRAIN, log_every=2), steps=4)
    lines = [{"step": s, "lr": s * 1e-4, "train_loss": 5 - s / 7} for s in (1, 2, 3)]
    lines += [{"step": 3, "lr": 3e-4, "train_loss": 4.123456789012}, {"step": 4, "lr": 4e-4, "train_loss": 4.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = metrics_rows(read_metrics(path), nt, path)
    assert [r["step"] for r in rows] == [1, 3, 4]  # every log_every steps and the last
    assert rows[1]["train_loss"] == 4.123456789012  # the resumed attempt's line, at full precision
    with pytest.raises(UserError, match="no metrics for step 5 of 6"):
        metrics_rows(read_metrics(path), nanotron_job(tmp_path, steps=6), path)
    path.write_text("iteration: 1 / 4\n")
    with pytest.raises(UserError, match="metrics.jsonl:1: not a metrics line"):
        read_metrics(path)


REFUSED = [
    ({"parametrization": "mup", "mup_base_d_model": 16}, {}, "model.parametrization mup"),
    ({}, {"device": "auto"}, "train.device auto"),
    ({}, {"dtype": "fp32"}, "train.dtype fp32: flash-attention runs in bf16 only on GPUs"),
    ({}, {"tensorboard": True}, "train.tensorboard"),
    ({"moe": dataclasses.replace(MOE, router_bias=True)}, {}, "moe.router_bias: nanotron's router has no bias"),
]
TRAINABLE = [  # refused before the backend ran our model class and schedule
    ({"moe": dataclasses.replace(MOE, norm_topk_prob=True)}, {}),
    ({"moe": dataclasses.replace(MOE, aux_loss_coef=0.01, z_loss_coef=0.001)}, {}),
    ({"moe": dataclasses.replace(MOE, capacity_factor=1.25)}, {}),
    ({}, {"device": "cpu", "dtype": "fp32"}),
    ({}, {"device": "cpu", "dtype": "bf16"}),
    ({}, {"lr_policy": "continue"}),
]


@pytest.mark.parametrize("model,train", TRAINABLE)
def test_the_torch_backends_science_is_trainable(model, train):
    check_trainable(tiny_config(model.pop("moe", MOE), **model), dataclasses.replace(TRAIN, **train))


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
    cfg["train"] = {**cfg["train"], "backend": "nanotron", "dtype": "fp32"}
    with pytest.raises(UserError, match=r"^config key 'models.s'.*train.dtype fp32: flash-attention"):
        validate_config(cfg)
    cfg = paper_config()
    cfg["train"] = {**cfg["train"], "backend": "nanotron", "device": "auto"}
    with pytest.raises(UserError, match="config key 'models.xs'.*train.device auto"):
        validate_config(cfg)


def test_paper_nanotron_overlay_keeps_the_papers_moe_science_and_trains_every_budget_as_one_run():
    paper = validate_config(paper_config("paper.yaml"))
    overlay = validate_config(paper_config("paper.yaml", "paper_nanotron.yaml"))
    assert overlay["moe"] == paper["moe"] and overlay["train"]["backend"] == "nanotron"
    assert overlay["moe"]["e8k2"]["norm_topk_prob"] and overlay["moe"]["e8k2"]["aux_loss_coef"] == 0.01
    grid = Grid(overlay)
    assert grid.segments == {} and all(grid.branch_step(r) == 0 for r in grid.runs)
    assert Grid(paper).segments  # the torch backend branches its cooldowns


def test_stable_segments_are_refused_by_the_backend(tmp_path, monkeypatch):
    from stages.train import main

    corpus = tokenizer_corpus(tmp_path / "corpus")
    args = ["--kind", "dense", "--run-id", "dense/t/d1_2560", "--data", str(corpus), "--tokens", "2560"]
    args += ["--model", json.dumps({"n_layer": 1, "d_model": 32, "n_head": 4, "d_ff": 64})]
    args += ["--train", json.dumps(dataclasses.asdict(TRAIN)), "--seed", "1", "--data-seed", "2"]
    with pytest.raises(UserError, match="--stop-step: the nanotron backend trains every wsd budget as one run"):
        main([*args, "--stop-step", "5", "--state-out", str(tmp_path / "b.pt")])
