"""One CPU training step of our model next to Hugging Face transformers and a plain PyTorch loop, at the grid's
default shapes, with the fp32 matmul ceiling measured in the same run: is our step as fast as theirs, and how
far from the machine's matmul rate is it?

    .venv/bin/python bench/train_throughput.py            # config/config.yaml shapes, dense and MoE, ~1-2 min
    .venv/bin/python bench/train_throughput.py --quick    # smoke mode: the smallest shape, few repeats

Contenders, all fp32 on one torch thread, same weights, same token batch, same trainer runtime settings
(stages.training.runtime.configure: deterministic kernels), each step = forward, loss, backward, gradient
clipping, AdamW step (the trainer's step of stages/training/loop.py):

* ``ours``: stages.model.transformer.Transformer, its cross_entropy, our AdamW with the trainer's groups;
* ``hf``: Qwen2ForCausalLM / Qwen2MoeForCausalLM loaded from our export mapping (stages.interop.hf), its own
  loss (labels; MoE: output_router_logits adds the balancing term), torch.optim.AdamW, default kernels (sdpa,
  grouped_mm experts). By the export's construction it carries zero q/k/v biases (dense) and a shared expert of
  width 0 (MoE), which it trains: a little more work than ours, part of what "same function in HF" costs;
* ``plain``: :class:`PlainLM` below, a minimal Qwen2-style model as a tutorial would write it (per-expert loop
  for MoE), F.cross_entropy, torch.optim.AdamW.

Timing: median over interleaved rounds (each round times every contender in a rotating order, so machine noise
is shared) after warm-up steps. Model FLOP/s = 6N+attn FLOPs per token (stages/model/compute.py) x tokens/s;
``ceil <contender>`` = that / the 2048^3 sgemm FLOP/s (median of samples taken between the rounds). ``ours/hf`` and
``ours/plain`` are step-time ratios (below 1: ours is faster). ``dloss0`` is the largest first-step loss
difference between the contenders: the same function on the same weights, so ~1e-6 dense; ~1e-5 MoE, where
transformers averages the balancing statistics over layers before the product (see stages/interop/hf.py).
Clock: process CPU time by default (one thread, so on an idle machine it equals wall time, and on a machine
shared with other jobs it does not count the time they take the core away); ``--clock wall`` for wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.interop.hf import HF_CONFIG, HF_WEIGHTS, hf_config, hf_state  # noqa: E402
from stages.model.checkpoint import state_dict_for_saving  # noqa: E402
from stages.model.compute import flops_per_token, param_counts  # noqa: E402
from stages.model.config import ModelConfig  # noqa: E402
from stages.model.layers import rotary_cos_sin  # noqa: E402
from stages.model.transformer import Transformer, cross_entropy, seed_generator  # noqa: E402
from stages.training.optimizer import make_optimizer  # noqa: E402
from stages.training.options import TrainConfig  # noqa: E402
from stages.training.runtime import configure  # noqa: E402
from stages.workflow.accounting import load_config  # noqa: E402
from stages.workflow.config import grid_blocks, model_config  # noqa: E402

COLUMNS = [
    ("shape", 5),
    ("variant", 7),
    ("N_active", 8),
    ("ms ours", 8),
    ("ms hf", 8),
    ("ms plain", 8),
    ("tok/s ours", 10),
    ("GFLOP/s ours", 12),
    ("ceil ours", 9),
    ("ceil hf", 7),
    ("ceil plain", 10),
    ("ours/hf", 7),
    ("ours/plain", 10),
    ("dloss0", 0),
]

Step = Callable[[], float]


# ---------------------------------------------------------------------------------------------- plain reference


class PlainAttention(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.n_head, -1).transpose(1, 2)

        def rope(y: torch.Tensor) -> torch.Tensor:
            y1, y2 = y.chunk(2, dim=-1)
            return y * cos + torch.cat((-y2, y1), dim=-1) * sin

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        y = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class PlainMLP(nn.Module):
    def __init__(self, d: int, f: int) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class PlainMoE(nn.Module):
    """Softmax router, top-k (renormalised), a Python loop over experts with index_add_, Switch balancing loss."""

    def __init__(self, d: int, f: int, experts: int, top_k: int, renorm: bool) -> None:
        super().__init__()
        self.top_k, self.renorm = top_k, renorm
        self.gate = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(PlainMLP(d, f) for _ in range(experts))
        self.aux_loss = torch.zeros(())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.reshape(-1, h.shape[-1])
        probs = torch.softmax(self.gate(x), dim=-1)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        if self.renorm:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == e)
            if token.numel():
                out.index_add_(0, token, expert(x[token]) * weights[token, slot, None])
        fractions = torch.bincount(chosen.reshape(-1), minlength=len(self.experts)).float() / chosen.numel()
        self.aux_loss = len(self.experts) * torch.sum(fractions * probs.mean(dim=0))
        return out.view(h.shape)


class PlainBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.input_layernorm = nn.RMSNorm(d, eps=cfg.norm_eps)
        self.self_attn = PlainAttention(d, cfg.n_head)
        self.post_attention_layernorm = nn.RMSNorm(d, eps=cfg.norm_eps)
        moe = cfg.moe
        self.mlp = (
            PlainMoE(d, cfg.expert_d_ff, moe.experts, moe.top_k, moe.norm_topk_prob) if moe else PlainMLP(d, cfg.d_ff)
        )

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class PlainDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(PlainBlock(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)


class PlainLM(nn.Module):
    """The reference: a minimal Qwen2-style LM (no grouped KV, no q/k/v bias, tied head), HF parameter names."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.n_kv_head != cfg.n_head or cfg.qkv_bias or not cfg.tie_embeddings:
            raise ValueError("PlainLM covers the grid's shapes: no grouped KV, no q/k/v bias, tied embeddings")
        self.model = PlainDecoder(cfg)
        cos, sin = rotary_cos_sin(cfg, cfg.max_seq_len, torch.device("cpu"))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the mean balancing loss over MoE layers (0 for dense)."""
        t = idx.shape[1]
        x = self.model.embed_tokens(idx)
        for layer in self.model.layers:
            x = layer(x, self.cos[:t], self.sin[:t])
        aux = [layer.mlp.aux_loss for layer in self.model.layers if isinstance(layer.mlp, PlainMoE)]
        logits = F.linear(self.model.norm(x), self.model.embed_tokens.weight)
        return logits, torch.stack(aux).mean() if aux else logits.new_zeros(())


# ---------------------------------------------------------------------------------------------- the contenders


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainer's AdamW groups: matrices decay, norms and biases do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def torch_adamw(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        decay_groups(model, train.weight_decay), lr=train.lr, betas=(train.beta1, train.beta2), eps=train.adam_eps
    )


def training_step(
    model: nn.Module, optimizer, loss_fn: Callable[[], torch.Tensor], max_norm: float
) -> Callable[[], float]:
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> float:
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        return float(loss.detach())

    return step


def ours(cfg: ModelConfig, ref: Transformer, batch: torch.Tensor, train: TrainConfig) -> Step:
    model = Transformer(cfg)
    model.load_state_dict(ref.state_dict())
    model.train()
    aux_coef = cfg.moe.aux_loss_coef if cfg.moe else 0.0
    x, y = batch[:, :-1], batch[:, 1:]

    def loss() -> torch.Tensor:
        out = model(x)
        return cross_entropy(out.logits, y) + aux_coef * out.aux_loss

    return training_step(model, make_optimizer(model, train), loss, train.grad_clip)


def hugging_face(cfg: ModelConfig, ref: Transformer, batch: torch.Tensor, train: TrainConfig) -> Step:
    """Through our export mapping: the config.json and safetensors the HF export writes, loaded by transformers."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        directory = Path(tmp)
        (directory / HF_CONFIG).write_text(json.dumps(hf_config(cfg)))
        save_file(hf_state(cfg, state_dict_for_saving(ref)), str(directory / HF_WEIGHTS), metadata={"format": "pt"})
        warnings.simplefilter("ignore", UserWarning)  # a shared expert of width 0 (ours has none) warns at init
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).train()
    x, y = batch[:, :-1], batch[:, 1:].contiguous()  # transformers views the labels
    moe = cfg.moe is not None

    def loss() -> torch.Tensor:
        return model(input_ids=x, labels=y, shift_labels=y, use_cache=False, output_router_logits=moe or None).loss

    return training_step(model, torch_adamw(model, train), loss, train.grad_clip)


def plain(cfg: ModelConfig, ref: Transformer, batch: torch.Tensor, train: TrainConfig) -> Step:
    model = PlainLM(cfg)
    missing, _ = model.load_state_dict(hf_state(cfg, state_dict_for_saving(ref)), strict=False)
    if missing:
        raise RuntimeError(f"PlainLM: weights missing from the export mapping: {missing[:3]}")
    model.train()
    aux_coef = cfg.moe.aux_loss_coef if cfg.moe else 0.0
    x, y = batch[:, :-1], batch[:, 1:]

    def loss() -> torch.Tensor:
        logits, aux = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)) + aux_coef * aux

    return training_step(model, torch_adamw(model, train), loss, train.grad_clip)


BUILDERS = {"ours": ours, "hf": hugging_face, "plain": plain}


# ---------------------------------------------------------------------------------------------- measuring


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["cpu"]


def sgemm_rate(n: int) -> float:
    """FLOP/s of one n x n x n fp32 matmul (one sample; the caller takes the median)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a @ b  # page in
    t0 = clock()
    a @ b
    return 2.0 * n**3 / (clock() - t0)


def time_steps(step: Step, steps: int) -> float:
    t0 = clock()
    for _ in range(steps):
        step()
    return (clock() - t0) / steps


def measure(steps: dict[str, Step], warmup: int, rounds: int, per_sample: int, ceiling: list[float], n: int):
    """Median seconds per step of each contender, rounds interleaved (rotating order), and first-step losses."""
    loss0 = {name: step() for name, step in steps.items()}
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples[name].append(time_steps(steps[name], per_sample))
        if r % 3 == 0:
            ceiling.append(sgemm_rate(n))
    return {name: statistics.median(s) for name, s in samples.items()}, loss0


def fmt(value: object, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1e3 else f"{value:.3g}"
    else:
        text = str(value)
    return text.ljust(width) if width else text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", default=str(REPO / "config" / "config.yaml"), help="grid whose shapes to time")
    p.add_argument("--shapes", help="comma-separated model names (default: the grid's dense models)")
    p.add_argument("--moe", help="comma-separated MoE variants (default: the grid's; 'none' for dense only)")
    p.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (the median is reported)")
    p.add_argument("--per-sample", type=int, default=2, help="steps per timing sample")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per contender")
    p.add_argument("--mm-size", type=int, default=2048, help="n of the n^3 sgemm ceiling")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--contenders", default="ours,hf,plain", help="subset of ours,hf,plain")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time or wall time")
    p.add_argument("--quick", action="store_true", help="smoke mode: first shape only, 2 rounds, 512^3 ceiling")
    args = p.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    if args.quick:
        args.rounds, args.per_sample, args.warmup, args.mm_size = 2, 1, 1, 512

    cfg = load_config([args.configfile])
    t = cfg["train"]
    train = TrainConfig(**{k: v for k, v in t.items() if k in TrainConfig.__dataclass_fields__})
    shapes = args.shapes.split(",") if args.shapes else [m for b in grid_blocks(cfg, "dense") for m in b["models"]]
    shapes = list(dict.fromkeys(shapes))
    used = [
        m for m in cfg["moe"] if any(m in b["moe"] for k in ("upcycled", "scratch_moe") for b in grid_blocks(cfg, k))
    ]
    variants: list[str | None] = [None] + ([] if args.moe == "none" else (args.moe.split(",") if args.moe else used))
    if args.quick:
        shapes = shapes[:1]
    contenders = args.contenders.split(",")
    configure(args.threads)
    tokens = train.batch_size * train.seq_len
    print(
        f"# train_throughput: torch {torch.__version__}, fp32, {torch.get_num_threads()} thread(s), batch "
        f"{train.batch_size} x seq {train.seq_len} = {tokens} tokens/step, vocab {cfg['data']['vocab_size']}, "
        f"median of {args.rounds} interleaved rounds x {args.per_sample} step(s) after {args.warmup} warm-up, "
        f"{args.clock} clock, "
        f"config {args.configfile}"
    )
    print(" | ".join(fmt(name, w) for name, w in COLUMNS))
    print("-+-".join("-" * max(w, 6) for _, w in COLUMNS))

    ceiling: list[float] = [sgemm_rate(args.mm_size)]
    rows = []
    started = time.perf_counter()
    for shape in shapes:
        for variant in variants:
            mcfg = model_config(cfg, shape, variant)
            ref = Transformer(mcfg)
            ref.init_weights(seed_generator(0))
            gen = torch.Generator().manual_seed(0)
            batch = torch.randint(0, mcfg.vocab_size, (train.batch_size, train.seq_len + 1), generator=gen)
            steps = {name: BUILDERS[name](mcfg, ref, batch, train) for name in contenders}
            seconds, loss0 = measure(steps, args.warmup, args.rounds, args.per_sample, ceiling, args.mm_size)
            rows.append((shape, variant or "dense", mcfg, seconds, loss0))
    peak = statistics.median(ceiling)
    for shape, variant, mcfg, seconds, loss0 in rows:
        fpt = flops_per_token(mcfg, train.seq_len, "6N+attn")
        rate = {name: fpt * tokens / s for name, s in seconds.items()}
        values = {
            "shape": shape,
            "variant": variant,
            "N_active": f"{param_counts(mcfg).active() / 1e6:.3g}M",
            "tok/s ours": tokens / seconds["ours"] if "ours" in seconds else None,
            "GFLOP/s ours": rate["ours"] / 1e9 if "ours" in rate else None,
            "dloss0": f"{max(loss0.values()) - min(loss0.values()):.1e}",
        }
        for name in contenders:
            values[f"ms {name}"] = seconds[name] * 1e3
            values[f"ceil {name}"] = rate[name] / peak
        for other in ("hf", "plain"):
            if "ours" in seconds and other in seconds:
                values[f"ours/{other}"] = seconds["ours"] / seconds[other]
        print(" | ".join(fmt(values.get(name), w) for name, w in COLUMNS), flush=True)
    print(
        f"# ceiling: {args.mm_size}^3 fp32 matmul {peak / 1e9:.1f} GFLOP/s (median of {len(ceiling)} samples, "
        f"range {min(ceiling) / 1e9:.1f}-{max(ceiling) / 1e9:.1f}); {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
