"""The nanotron training YAML of one job, and what the nanotron backend cannot train, refused in one line.

The target is GitHub main of huggingface/nanotron pinned at :data:`NANOTRON_COMMIT` (its ``Config`` dataclasses,
``src/nanotron/config/*.py``, parsed with dacite in strict mode: an unknown key is an error, so every key below
is one of theirs). Every section is written out, so that no nanotron default we did not choose decides a run.
The job runs through our entry point (:mod:`stages.interop.nanotron_entry`), which passes nanotron's trainer our
model class and fixes, so several sections describe what nanotron parses rather than all that runs:

* the MoE routing (renormalised or plain top-k, capacity, the load-balancing and router z-losses) is our model
  class's (:mod:`stages.interop.nanotron_model`); ``moe_config`` carries the shapes, and
  ``router_aux_loss_coef`` our coefficient for a reader (nanotron itself reads nothing of it);
* the learning rate is our schedule (:class:`stages.interop.nanotron_trainer.ScheduleLR`, every policy);
  ``learning_rate_scheduler`` is its closest nanotron form (:func:`lr_scheduler`: the warmup one step later,
  the rest equal), which nanotron builds and our trainer replaces;
* weight decay applies to matrices only (the trainer's grouping; the YAML's exclusion list stays empty
  because nanotron's own is broken at the pinned commit);
* no pad token (nanotron would make it the embedding's ``padding_idx``, whose row then never learns: our data
  have no padding), no document masking (positions 0..seq_len-1 in every window, as ours), bf16 weights with
  fp32 gradient accumulation and master weights on GPUs, fp32 throughout in the CPU mode.

Refused (:func:`check_trainable`): muP (nanotron's ``SpectralMupInit`` is another parametrization), fp32 on
GPUs (flash-attention runs in bf16/fp16; fp32 is the CPU mode's), ``device: auto`` (a job must say whether it is
a GPU run or a CPU check), and TensorBoard files (nanotron writes none). Periodic validation (``eval_every``)
never changes the weights: nanotron runs none, so its ``metrics.csv`` has no ``val_loss`` column (each run is
still evaluated by ``stages.evaluate``). Torch-free: config validation imports it while the DAG is built, so
``snakemake -n`` already fails on what is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.cli import UserError
from stages.model.config import ModelConfig
from stages.training.options import TrainConfig

NANOTRON_COMMIT = "2411b022a75fb7f7561a1bb4166706da5e1b76de"  # huggingface/nanotron main, 2026-04-07
PROJECT = "moe_upcycling"
STAGE = "stream"  # the one data stage: our token stream of the run, in order
SEED_RANGE = 1 << 31  # nanotron seeds numpy, which takes 32-bit seeds; ours are 63-bit


def nanotron_model_config(cfg: ModelConfig, routed: bool = False) -> dict[str, Any]:
    """nanotron ``Qwen2Config`` fields for this model (the rest keep nanotron's defaults).

    ``routed``: for our model class, which routes as our MoE layer does; otherwise (an export for plain nanotron)
    what nanotron's own MoE layer cannot compute is refused.
    """
    moe = cfg.moe
    if moe is not None and moe.router_bias:
        raise UserError("moe.router_bias: nanotron's MoE router has no bias; such a model cannot go to nanotron")
    if moe is not None and moe.capacity_factor > 0 and not routed:
        raise UserError(
            f"moe.capacity_factor={moe.capacity_factor}: nanotron's MoE is dropless and cannot express "
            "token dropping; export a model trained with capacity_factor 0"
        )
    if moe is not None and moe.norm_topk_prob and not routed:
        raise UserError(
            "moe.norm_topk_prob=true: nanotron's Qwen2 MoE does not renormalise the top-k weights; "
            "only models with norm_topk_prob false can be exported to nanotron"
        )
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
            "router_aux_loss_coef": moe.aux_loss_coef if routed else moe.aux_loss_coef / moe.top_k,
        }
    return out


def routing_options(model: ModelConfig) -> dict[str, Any] | None:
    """The MoE options nanotron's config cannot carry, for the backend's model class (None for a dense model)."""
    moe = model.moe
    if moe is None:
        return None
    return {
        "top_k": moe.top_k,
        "norm_topk_prob": moe.norm_topk_prob,
        "capacity_factor": moe.capacity_factor,
        "aux_loss_coef": moe.aux_loss_coef,
        "z_loss_coef": moe.z_loss_coef,
    }


def refusals(model: ModelConfig, train: TrainConfig) -> list[str]:
    """What the nanotron backend would train differently from our trainer, one line each naming the key."""
    out = []
    if model.parametrization == "mup":
        out.append("model.parametrization mup: nanotron's muP (SpectralMupInit) is another parametrization")
    if train.device not in ("cuda", "cpu"):
        out.append(
            f"train.device {train.device}: say cuda (a GPU run) or cpu (the CPU check mode: correctness, not speed)"
        )
    if train.device == "cuda" and train.dtype == "fp32":
        out.append("train.dtype fp32: flash-attention runs in bf16 only on GPUs (set train.dtype bf16)")
    if train.tensorboard:
        out.append("train.tensorboard: nanotron writes no TensorBoard files; set it to false")
    if model.moe is not None and model.moe.router_bias:
        out.append("moe.router_bias: nanotron's router has no bias (its checkpoints cannot hold one)")
    return out


def check_trainable(model: ModelConfig, train: TrainConfig) -> None:
    """Refuse, in one line, the first thing nanotron main would train differently from our trainer."""
    reasons = refusals(model, train)
    if reasons:
        raise UserError(f"train.backend nanotron: {reasons[0]}")


def lr_scheduler(train: TrainConfig, steps: int, warmup: int, decay: int) -> dict[str, Any]:
    """Our schedule as nanotron's ``LRSchedulerArgs``.

    nanotron sets the lr of step ``s`` (0-based) to ``f(s)``: ``peak * s / W`` while ``s <= W``, then ``peak``
    until the decay start ``D``, then the decay shape at progress ``(s - D) / N`` until ``s = D + N``, then
    the floor. Ours: warmup ``peak * (s + 1) / W``; cosine from ``W`` reaching the floor at the last step
    (``D = W``, ``N = steps - W - 1``); wsd decay at progress ``(s - start + 1) / decay`` (``D = start - 1``,
    ``N = decay``). Without warmup nanotron's ``linear`` style would give 0 at step 0 (and a schedule with
    neither warmup nor decay returns lr squared), so constant_min is a ``constant`` warmup of 0 steps then a
    decay from the floor to itself.
    """
    peak, floor = train.lr, train.lr * train.min_lr_ratio
    args: dict[str, Any] = {
        "learning_rate": peak,
        "lr_warmup_steps": warmup,
        "lr_warmup_style": "linear",
        "min_decay_lr": floor,
    }
    if train.lr_policy == "constant_min":
        args.update(
            learning_rate=floor,
            lr_warmup_steps=0,
            lr_warmup_style="constant",
            lr_decay_style="linear",
            lr_decay_starting_step=0,
            lr_decay_steps=max(1, steps),
        )
    elif train.lr_policy == "cosine":
        args.update(lr_decay_style="cosine", lr_decay_starting_step=warmup, lr_decay_steps=max(1, steps - warmup - 1))
    elif train.lr_policy == "wsd":
        args.update(lr_decay_style=train.decay_shape, lr_decay_starting_step=steps - decay - 1, lr_decay_steps=decay)
    else:  # continue: a cosine entered mid-way has no nanotron form; the trainer's schedule runs it
        args.update(lr_warmup_steps=0, lr_warmup_style="constant", lr_decay_style="cosine")
        args.update(lr_decay_starting_step=0, lr_decay_steps=max(1, steps))
    return args


@dataclass(frozen=True)
class NanotronJob:
    """What one nanotron run needs beyond our options: its identity, sizes, world and file locations."""

    run_id: str
    seed: int
    data_seed: int
    model: ModelConfig
    train: TrainConfig
    steps: int
    warmup: int
    decay: int  # wsd: steps of the final decay (0 otherwise)
    dp: int  # data-parallel replicas = world size (tp = pp = 1)
    micro_batch: int  # sequences per GPU and forward pass
    eot_id: int
    init: Path  # our starting weights exported in nanotron's layout
    data: Path  # folder of the converted token stream (stages.interop.nanotron_data)
    tokenizer: Path  # folder AutoTokenizer loads (tokenizer.json + tokenizer_config.json)
    token_size: int  # bytes per token id in the .ds file
    checkpoints: Path
    checkpoint_interval: int
    resume: Path | None = None  # a nanotron checkpoint folder of this same job to continue from

    def __post_init__(self) -> None:
        batch = self.train.batch_size
        if batch % self.dp:
            raise UserError(
                f"train.batch_size {batch}: not divisible by the {self.dp} data-parallel GPUs of this nanotron job"
            )
        if self.micro_batch < 1 or (batch // self.dp) % self.micro_batch:
            raise UserError(
                f"train.micro_batch_size {self.micro_batch}: must divide the {batch // self.dp} sequences per GPU "
                f"(train.batch_size {batch} / {self.dp} GPUs)"
            )

    @property
    def accumulation(self) -> int:
        return self.train.batch_size // (self.dp * self.micro_batch)


def training_config(job: NanotronJob) -> dict[str, Any]:
    """The complete nanotron ``Config`` of ``job`` as a plain dict (what ``config.yaml`` holds)."""
    check_trainable(job.model, job.train)
    t = job.train
    model_config = nanotron_model_config(job.model, routed=True)
    model_config.update(
        bos_token_id=job.eot_id,
        eos_token_id=job.eot_id,
        pad_token_id=None,  # nanotron's padding_idx: that embedding row would never learn (our data have no padding)
        _attn_implementation="flash_attention_2",
        _fused_rms_norm=True,
        _fused_rotary_emb=True,
        _use_qkv_packed=True,  # the unpacked path is broken at the pinned commit
        _use_doc_masking=False,  # positions 0..seq_len-1 in every window: plain causal attention, as ours
        log_attn_probs=False,
        z_loss_enabled=False,
        sliding_window_size=None,
        no_rope_layer=None,
        rope_seq_len_interpolation_factor=None,
    )
    if model_config["moe_config"] is not None:
        model_config["moe_config"].update(token_dispatcher_type="alltoall")
    fp32 = t.dtype == "fp32"
    tokenizer = str(job.tokenizer.resolve())
    return {
        "general": {
            "project": PROJECT,
            "run": job.run_id.replace("/", "-"),
            "seed": job.seed % SEED_RANGE,
            "ignore_sanity_checks": True,
        },
        "parallelism": {
            "dp": job.dp,
            "tp": 1,
            "pp": 1,
            "context_parallel_size": 1,
            "expert_parallel_size": 1,  # > 1 fails in ParallelContext at the pinned commit
            "pp_engine": "1f1b",
            "tp_mode": "ALL_REDUCE",
            "tp_linear_async_communication": False,
            "recompute_layer": False,
        },
        "model": {
            "dtype": "float32" if fp32 else "bfloat16",
            "make_vocab_size_divisible_by": 1,  # the exported embedding has exactly vocab_size rows
            "ddp_bucket_cap_mb": 25,
            "init_method": {"path": str(job.init.resolve())},
            "model_config": model_config,
        },
        "tokenizer": {"tokenizer_name_or_path": tokenizer, "tokenizer_revision": None, "tokenizer_max_length": None},
        "checkpoints": {
            "checkpoints_path": str(job.checkpoints.resolve()),
            "checkpoint_interval": job.checkpoint_interval,
            "save_initial_state": False,
            "save_final_state": True,
            "resume_checkpoint_path": str(job.resume.resolve()) if job.resume else None,
            "load_optimizer": True,
            "load_lr_scheduler": True,
            "checkpoints_path_is_shared_file_system": False,
        },
        "logging": {"log_level": "info", "log_level_replica": "warning", "iteration_step_info_interval": 1},
        "tokens": {
            "sequence_length": t.seq_len,
            "micro_batch_size": job.micro_batch,
            "batch_accumulation_per_replica": job.accumulation,
            "train_steps": job.steps,
            "val_check_interval": -1,
            "limit_val_batches": 0,
            "limit_test_batches": 0,
        },
        "optimizer": {
            "zero_stage": 0,
            "weight_decay": t.weight_decay,
            "weight_decay_exclude_named_params": [],  # the trainer groups: matrices decay (module docstring)
            # always clip (at infinity: a no-op) so that nanotron measures the gradient norm we log
            "clip_grad": t.grad_clip if t.grad_clip > 0 else float("inf"),
            "accumulate_grad_in_fp32": not fp32,  # fp32 weights: nanotron asserts non-fp32 params for it
            "optimizer_factory": {
                "name": "adamW",
                "adam_eps": t.adam_eps,
                "adam_beta1": t.beta1,
                "adam_beta2": t.beta2,
                "torch_adam_is_fused": t.device == "cuda",
            },
            "learning_rate_scheduler": lr_scheduler(t, job.steps, job.warmup, job.decay),
        },
        "data_stages": [
            {
                "name": STAGE,
                "start_training_step": 1,
                "sequence_length": t.seq_len,
                "data": {
                    "seed": job.data_seed % SEED_RANGE,
                    "num_loading_workers": 1,
                    "dataset": {
                        "dataset_folder": [str(job.data.resolve())],
                        "dataset_weights": [1.0],
                        "tokenizer_name": tokenizer,
                        "vocab_size": job.model.vocab_size,
                        "token_size_in_bytes": job.token_size,
                        "return_positions": False,
                        # read our windows in file order with the reader that needs no datatrove branch
                        "use_old_brrr_dataloader": True,
                        "skip_in_stream": False,
                        "shuffle_files": False,
                        "pad_samples_to_global_batch_size": False,
                        "dataset_max_tokens": None,
                        "dataset_read_path": None,
                    },
                },
            }
        ],
        "metrics_logging": None,
        "profiler": None,
        "lighteval": None,
        "s3_upload": None,
    }
