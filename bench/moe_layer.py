"""Forward + backward time of our MoE layer against references, measured side by side in one run.

    .venv/bin/python bench/moe_layer.py [--tokens 2048 --d-model 64 --d-ff 256 --experts 8 --top-k 2 --threads 1]

Compared (same weights, same input, same thread count):
  ours        stages.moe.MoELayer (sort by expert, one torch._grouped_mm per weight)
  loop        the same layer with a Python loop over experts for the expert matmuls (per-expert reference)
  hf          transformers' Qwen2MoeSparseMoeBlock (eager experts: a loop over the experts that got tokens;
              it always builds a shared expert: width 0 here, output exactly 0, its tiny ops are timed)
  dense       a SwiGLU FFN of width top_k * d_ff / G: the same active FLOPs with no routing at all
Prints median milliseconds and the ratios ours/dense (the cost of routing), loop/ours and hf/ours.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.model.config import ModelConfig, MoEConfig  # noqa: E402
from stages.model.layers import MLP  # noqa: E402
from stages.model.moe import MoELayer, grouped_mm_loop  # noqa: E402
from stages.training.runtime import configure  # noqa: E402


def fwd_bwd_ms(fn, x: torch.Tensor) -> float:
    x.grad = None
    start = time.perf_counter()
    y = fn(x)
    y.backward(torch.ones_like(y))
    return (time.perf_counter() - start) * 1e3


def interleaved_medians(fns: dict, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median forward+backward ms of each function, measured round-robin so that machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeats + 2):
        for name, fn in fns.items():
            ms = fwd_bwd_ms(fn, x)
            if i >= 2:  # warm-up rounds
                times[name].append(ms)
    return {name: statistics.median(t) for name, t in times.items()}


def hf_block(layer: MoELayer, cfg: ModelConfig):
    """transformers' Qwen2-MoE sparse block holding the same router and expert weights (no shared expert)."""
    import warnings

    from transformers import Qwen2MoeConfig
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
    from transformers.utils import logging

    logging.set_verbosity_error()  # the standalone block has no experts-implementation dispatch: expected here
    moe = cfg.moe
    hf_cfg = Qwen2MoeConfig(
        hidden_size=cfg.d_model,
        moe_intermediate_size=cfg.expert_d_ff,
        num_experts=moe.experts,
        num_experts_per_tok=moe.top_k,
        norm_topk_prob=moe.norm_topk_prob,
        shared_expert_intermediate_size=0,
    )
    with warnings.catch_warnings():  # the width-0 shared expert Qwen2-MoE always builds (its output is exactly 0)
        warnings.simplefilter("ignore", UserWarning)
        block = Qwen2MoeSparseMoeBlock(hf_cfg)
    with torch.no_grad():
        block.gate.weight.copy_(layer.gate.weight)
        block.experts.gate_up_proj.copy_(layer.experts.gate_up_proj)
        block.experts.down_proj.copy_(layer.experts.down_proj)
    return block


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2048, help="tokens per call (default: one training batch)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--d-ff", type=int, default=256)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--granularity", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    configure(args.threads)
    cfg = ModelConfig(
        vocab_size=256,
        n_layer=1,
        d_model=args.d_model,
        n_head=1,
        d_ff=args.d_ff,
        moe=MoEConfig(
            experts=args.experts, top_k=args.top_k, granularity=args.granularity, norm_topk_prob=args.top_k > 1
        ),  # renormalised top-1 is refused: no router gradient
    )
    gen = torch.Generator().manual_seed(0)
    layer = MoELayer(cfg)
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(0.0, 0.02, generator=gen)
    loop_layer = MoELayer(cfg)
    loop_layer.load_state_dict(layer.state_dict())
    loop_layer.mm = grouped_mm_loop
    dense = MLP(cfg.d_model, args.top_k * cfg.expert_d_ff)
    x = torch.randn(1, args.tokens, cfg.d_model, generator=gen).requires_grad_(True)
    fns = {"ours": layer, "loop": loop_layer, "dense": dense}
    try:
        block = hf_block(layer, cfg)
        torch.testing.assert_close(block(x).detach(), layer(x).detach(), rtol=1e-4, atol=1e-5)
        fns["hf"] = block
    except ImportError:
        print("transformers not installed: skipping the Hugging Face reference")
    results = interleaved_medians(fns, x, args.repeats)
    print(
        f"shapes: tokens={args.tokens} d_model={args.d_model} d_ff={args.d_ff} experts={args.experts} "
        f"top_k={args.top_k} G={args.granularity} threads={args.threads}"
    )
    print(f"median of {args.repeats} interleaved forward+backward calls per variant")
    for name, ms in results.items():
        print(f"  {name:6s} {ms:8.2f} ms")
    print(f"ratio ours/dense (routing overhead at equal active FLOPs): {results['ours'] / results['dense']:.2f}x")
    print(f"ratio loop/ours (speed-up over the per-expert loop):       {results['loop'] / results['ours']:.2f}x")
    if "hf" in results:
        print(f"ratio hf/ours (speed-up over transformers' Qwen2-MoE):     {results['hf'] / results['ours']:.2f}x")


if __name__ == "__main__":
    main()
