"""Tokens/s, MFU and peak memory of our trainer's training step for every grid model shape, dense and MoE,
eager and torch.compile'd, next to the matmul ceiling measured in the same run, plus bf16 torch._grouped_mm
under torch.compile. One table; every row catches its own failure (status column), so one failure hides nothing.

    .venv/bin/python bench/gpu_train_step.py                                  # cuda, config/paper.yaml shapes
    .venv/bin/python bench/gpu_train_step.py --device cpu --steps 3 --configfile config/tiny.yaml --shapes xs

The step is the one of stages/training/loop.py: bf16 autocast forward (fp32 on CPU by default), fp32
cross-entropy + the balancing loss, backward, gradient clipping, our AdamW (same options and parameter groups),
with the trainer's deterministic runtime settings. FLOPs per token: 6N and 6N+attn of stages/model/compute.py
(6N+attn is used for the MFU columns). MFU/ceil = achieved / the bf16 matmul ceiling measured here;
MFU/peak = achieved / the datasheet peak (--peak-tflops; 989 for H100/H200 SXM, unknown on CPU).
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.model.compute import flops_per_token, param_counts  # noqa: E402
from stages.model.moe import grouped_mm_loop  # noqa: E402
from stages.model.transformer import Transformer, cross_entropy, seed_generator  # noqa: E402
from stages.training.optimizer import make_optimizer  # noqa: E402
from stages.training.options import TrainConfig  # noqa: E402
from stages.training.runtime import configure, precision  # noqa: E402
from stages.workflow.accounting import load_config  # noqa: E402
from stages.workflow.config import grid_blocks, model_config  # noqa: E402

DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0}
COLUMNS = [
    ("check", 12),
    ("shape", 6),
    ("variant", 9),
    ("mode", 7),
    ("N_active", 9),
    ("tokens/s", 10),
    ("TFLOP/s", 8),
    ("MFU/ceil", 8),
    ("MFU/peak", 8),
    ("peak_GiB", 8),
    ("status", 0),
]


class _Skipped(Exception):
    pass


def fmt(value: object, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1e3 else f"{value:,.0f}"
    else:
        text = str(value)
    return text.ljust(width) if width else text


def print_row(**values: object) -> None:
    print(" | ".join(fmt(values.get(name), width) for name, width in COLUMNS), flush=True)


def short_error(err: BaseException) -> str:
    text = str(err).strip()
    first = (text.splitlines() or [""])[0][:120]
    inner = re.search(r"got (\w+Error)\('([^']{0,200})", text)  # torch.compile wraps the real error
    return f"FAIL: {type(err).__name__}: {first}" + (f" [{inner[1]}: {inner[2]}]" if inner else "")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_memory(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gib(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None


def matmul_ceiling(dev: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """TFLOP/s of an n x n x n matmul in ``dtype`` (best of ``repeats`` after a warm-up)."""
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(dev)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e12


def train_step_rate(cfg, train: TrainConfig, dev: torch.device, compile_: bool, warmup: int, steps: int) -> float:
    """Seconds per training step of the trainer's step on random tokens (after ``warmup`` steps)."""
    model = Transformer(cfg)
    model.init_weights(seed_generator(0))
    model = model.to(dev).train()
    optimizer = make_optimizer(model, train)
    forward = torch.compile(model) if compile_ else model
    params = list(model.parameters())
    aux_coef = cfg.moe.aux_loss_coef if cfg.moe else 0.0
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.vocab_size, (train.batch_size, train.seq_len + 1), generator=gen).to(dev)
    max_norm = train.grad_clip if train.grad_clip > 0 else float("inf")

    def step() -> None:
        with precision(dev, train.dtype):
            out = forward(batch[:, :-1])
        loss = cross_entropy(out.logits, batch[:, 1:]) + aux_coef * out.aux_loss
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss {float(loss)}")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()

    for _ in range(warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return (time.perf_counter() - t0) / steps


def grouped_mm_check(dev: torch.device, tokens: int, d: int, f: int, experts: int) -> tuple[float, str]:
    """bf16 torch._grouped_mm forward + backward under torch.compile: TFLOP/s and max error vs a per-expert loop."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(tokens, d, generator=gen) / d**0.5).to(dev, torch.bfloat16).requires_grad_(True)
    w = torch.randn(experts, d, f, generator=gen).to(dev, torch.bfloat16).requires_grad_(True)
    sizes = torch.full((experts,), tokens // experts)
    sizes[: tokens - int(sizes.sum())] += 1
    offs = torch.cumsum(sizes, 0).to(dev, torch.int32)
    fn = torch.compile(lambda a, b, o: torch._grouped_mm(a, b, offs=o))
    y = fn(x, w, offs)
    y.float().sum().backward()
    ref = grouped_mm_loop(x.detach().float(), w.detach().float(), offs)
    err = float((y.detach().float() - ref).abs().max() / ref.abs().max())
    sync(dev)
    repeats = 5
    t0 = time.perf_counter()
    for _ in range(repeats):
        x.grad = w.grad = None
        fn(x, w, offs).float().sum().backward()
    sync(dev)
    seconds = (time.perf_counter() - t0) / repeats
    tflops = 3 * 2.0 * tokens * d * f / seconds / 1e12
    status = "ok" if err < 2e-2 else "WRONG"
    return tflops, f"{status} (max rel err vs fp32 loop {err:.1e}; {experts} experts, {tokens}x{d}x{f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", default=str(REPO / "config" / "paper.yaml"), help="grid whose shapes to time")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--shapes", help="comma-separated model names (default: the grid's dense models)")
    p.add_argument("--moe", help="comma-separated MoE variants (default: every variant the grid uses; 'none')")
    p.add_argument("--modes", default="eager,compile", help="eager, compile or both")
    p.add_argument("--batch-size", type=int, help="sequences per step (default: the config's train.batch_size)")
    p.add_argument("--seq-len", type=int, help="default: the config's train.seq_len")
    p.add_argument("--steps", type=int, default=5, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per row (compilation happens here)")
    p.add_argument("--mm-size", type=int, help="matmul ceiling size n (default 8192 on cuda, 1024 on cpu)")
    p.add_argument("--peak-tflops", type=float, help="datasheet bf16 peak (default: from the GPU name)")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--checks", default="ceiling,train,grouped_mm", help="which checks to run (comma-separated)")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds; rows not started by then: SKIPPED")
    args = p.parse_args()
    started = time.perf_counter()

    cfg = load_config([args.configfile])
    dev = torch.device(args.device)
    dtype = args.dtype or ("bf16" if dev.type == "cuda" else "fp32")
    train = TrainConfig(
        **{
            **{k: v for k, v in cfg["train"].items() if k in TrainConfig.__dataclass_fields__},
            "device": args.device,
            "dtype": dtype,
            "batch_size": args.batch_size or cfg["train"]["batch_size"],
            "seq_len": args.seq_len or cfg["train"]["seq_len"],
        }
    )
    cfg["train"]["seq_len"] = train.seq_len  # model_config takes max_seq_len from here
    dense_models = [m for b in grid_blocks(cfg, "dense") for m in b["models"]]
    shapes = args.shapes.split(",") if args.shapes else list(dict.fromkeys(dense_models))
    used = {m for kind in ("upcycled", "scratch_moe") for b in grid_blocks(cfg, kind) for m in b["moe"]}
    variants = ["dense"] + (
        [] if args.moe == "none" else (args.moe.split(",") if args.moe else [m for m in cfg["moe"] if m in used])
    )
    modes = args.modes.split(",")
    configure(args.threads)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" and torch.cuda.is_available() else "cpu"
    peak = args.peak_tflops or next((v for k, v in DATASHEET_TFLOPS.items() if k in name), None)
    print(
        f"# gpu_train_step: device {name}, torch {torch.__version__}, {dtype}, batch {train.batch_size} x seq "
        f"{train.seq_len} = {train.batch_size * train.seq_len} tokens/step, vocab {cfg['data']['vocab_size']}, "
        f"datasheet peak {peak if peak else 'unknown'} TFLOP/s, config {args.configfile}"
    )
    print(" | ".join(fmt(n, w) for n, w in COLUMNS))
    print("-+-".join("-" * max(w, 6) for _, w in COLUMNS))

    checks = set(args.checks.split(","))
    ceiling = None
    failures = 0
    n = args.mm_size or (8192 if dev.type == "cuda" else 1024)
    mm_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    try:
        if "ceiling" not in checks:
            raise _Skipped
        ceiling = matmul_ceiling(dev, mm_dtype, n, repeats=10 if dev.type == "cuda" else 3)
        print_row(
            check="mm_ceiling",
            shape=f"{n}^3",
            variant=dtype,
            **{"TFLOP/s": ceiling, "MFU/peak": ceiling / peak if peak else None},
            status="ok",
        )
    except _Skipped:
        print_row(check="mm_ceiling", shape=f"{n}^3", variant=dtype, status="SKIPPED: not in --checks")
    except Exception as err:  # noqa: BLE001 - every check reports its own failure
        failures += 1
        print_row(check="mm_ceiling", shape=f"{n}^3", variant=dtype, status=short_error(err))

    for mode in modes if "train" in checks else []:
        for shape in shapes:
            for variant in variants:
                row = dict(check="train_step", shape=shape, variant=variant, mode=mode)
                if time.perf_counter() - started > args.time_limit:
                    print_row(**row, status=f"SKIPPED: --time-limit {args.time_limit:g} s reached")
                    continue
                try:
                    mcfg = model_config(cfg, shape, None if variant == "dense" else variant)
                    row["N_active"] = f"{param_counts(mcfg).active() / 1e6:.4g}M"
                    reset_memory(dev)
                    if mode == "compile":
                        torch._dynamo.reset()
                    seconds = train_step_rate(mcfg, train, dev, mode == "compile", args.warmup, args.steps)
                    rate = train.batch_size * train.seq_len / seconds
                    achieved = rate * flops_per_token(mcfg, train.seq_len, "6N+attn") / 1e12
                    row.update(
                        {
                            "tokens/s": rate,
                            "TFLOP/s": achieved,
                            "MFU/ceil": achieved / ceiling if ceiling else None,
                            "MFU/peak": achieved / peak if peak else None,
                            "peak_GiB": peak_gib(dev),
                            "status": "ok",
                        }
                    )
                except Exception as err:  # noqa: BLE001
                    failures += 1
                    row.update(peak_GiB=peak_gib(dev), status=short_error(err))
                    traceback.print_exc(file=sys.stderr)
                print_row(**row)
                reset_memory(dev)

    row = dict(check="grouped_mm", shape="bf16", variant="compiled", mode="compile")
    if "grouped_mm" not in checks:
        print_row(**row, status="SKIPPED: not in --checks")
    elif time.perf_counter() - started > args.time_limit:
        print_row(**row, status=f"SKIPPED: --time-limit {args.time_limit:g} s reached")
    else:
        try:
            torch._dynamo.reset()
            big = dev.type == "cuda"
            tflops, status = grouped_mm_check(dev, 65536 if big else 512, 1024 if big else 64, 2816 if big else 128, 8)
            row.update({"TFLOP/s": tflops, "MFU/ceil": tflops / ceiling if ceiling else None, "status": status})
            failures += not status.startswith("ok")
        except Exception as err:  # noqa: BLE001
            failures += 1
            row["status"] = short_error(err)
            traceback.print_exc(file=sys.stderr)
        print_row(**row)
    print(f"# {failures} failed check(s), {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
