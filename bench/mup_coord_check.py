"""Coordinate check of the muP parametrization (the standard test of microsoft/mup, Yang et al. 2022).

    .venv/bin/python bench/mup_coord_check.py [--widths 32,64,128,256 --steps 3 --lr 0.01 --moe --threads 1]

For each width (n_head fixed, so head_dim grows too; d_ff = 4 d_model) and each parametrization, a
2-layer model takes ``--steps`` Adam steps (our AdamW and the trainer's parameter groups, no weight decay,
no clipping) on one fixed batch of random tokens (2 x 16: with few tokens the coherent part of an update
already outweighs its random part at these small widths, as it does at any batch once wide enough); after
each step a forward pass on that batch records the mean |coordinate| of the embedding output, the last
block's attention and feed-forward outputs, the last hidden state, the logits and (``--moe``) the router
logits, and of their change since initialisation (``d_`` rows: what the updates did, the part muP keeps
width-independent; at init muP's logits and router logits shrink like 1/sqrt(m), which is allowed). Under
muP these stay about the same size as width grows; under SP the ones fed by wide matrix products grow
(their Adam updates add up over the fan-in). Prints one table row per (parametrization, step, quantity)
and the log-log slope of size against width.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.model.config import ModelConfig, MoEConfig  # noqa: E402
from stages.model.parametrization import optimizer_groups  # noqa: E402
from stages.model.transformer import Transformer, cross_entropy, seed_generator  # noqa: E402
from stages.training.optimizer import AdamW  # noqa: E402
from stages.training.runtime import configure  # noqa: E402

BASE = ("embed", "attn", "mlp", "hidden", "logits", "router")
QUANTITIES = (*BASE, *(f"d_{name}" for name in BASE))  # d_x: mean |x_t - x_0|, the change since init


@dataclass(frozen=True)
class Setup:
    """The shared settings of one coordinate check; only the width and the parametrization vary."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    base_width: int = 32
    n_head: int = 4
    steps: int = 3
    lr: float = 0.01
    vocab: int = 128
    seq_len: int = 16
    batch: int = 2
    moe: bool = False
    seed: int = 0


def model_config(setup: Setup, width: int, parametrization: str) -> ModelConfig:
    return ModelConfig(
        vocab_size=setup.vocab,
        n_layer=2,
        d_model=width,
        n_head=setup.n_head,
        d_ff=4 * width,
        max_seq_len=setup.seq_len,
        parametrization=parametrization,
        mup_base_d_model=setup.base_width,
        moe=MoEConfig(experts=4, top_k=2, granularity=2) if setup.moe else None,
    )


@torch.no_grad()
def activations(model: Transformer, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """The recorded quantities of one forward pass."""
    seen: dict[str, torch.Tensor] = {}
    last = model.model.layers[-1]
    hooks = [
        model.model.embed_tokens.register_forward_hook(lambda m, i, o: seen.__setitem__("embed", o)),
        last.self_attn.register_forward_hook(lambda m, i, o: seen.__setitem__("attn", o)),
        last.mlp.register_forward_hook(lambda m, i, o: seen.__setitem__("mlp", o)),
        last.register_forward_hook(lambda m, i, o: seen.__setitem__("hidden", o)),
    ]
    if last.is_moe:
        hooks.append(
            last.mlp.register_forward_hook(
                lambda m, i, o: seen.__setitem__("router", m.router_logits(i[0].reshape(-1, i[0].shape[-1])))
            )
        )
    try:
        seen["logits"] = model(batch).logits
    finally:
        for h in hooks:
            h.remove()
    return seen


def coord_sizes(setup: Setup, parametrization: str) -> dict[tuple[int, int, str], float]:
    """{(width, step, quantity): mean |coordinate| after that many Adam steps} for one parametrization."""
    gen = torch.Generator().manual_seed(setup.seed)
    tokens = torch.randint(0, setup.vocab, (setup.batch, setup.seq_len + 1), generator=gen)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    sizes: dict[tuple[int, int, str], float] = {}
    for width in setup.widths:
        cfg = model_config(setup, width, parametrization)
        model = Transformer(cfg)
        model.init_weights(seed_generator(setup.seed))
        optimizer = AdamW(optimizer_groups(model, cfg, 0.0), lr=setup.lr, betas=(0.9, 0.95))
        initial = activations(model, inputs)
        for step in range(1, setup.steps + 1):
            out = model(inputs)
            loss = cross_entropy(out.logits, targets)
            if cfg.moe is not None:
                loss = loss + cfg.moe.aux_loss_coef * out.aux_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for name, value in activations(model, inputs).items():
                sizes[width, step, name] = float(value.abs().mean())
                sizes[width, step, f"d_{name}"] = float((value - initial[name]).abs().mean())
    return sizes


def slope(sizes: dict[tuple[int, int, str], float], widths: tuple[int, ...], step: int, name: str) -> float:
    """Least-squares slope of log(size) against log(width): 0 is flat, 1 grows like width."""
    xs = [math.log(w) for w in widths]
    ys = [math.log(sizes[w, step, name]) for w in widths]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def table(setup: Setup) -> str:
    """The coordinate sizes of both parametrizations, one row per (parametrization, step, quantity)."""
    lines = [
        " | ".join(["param", "step", "quantity", *(f"w={w}" for w in setup.widths), "slope"]),
    ]
    lines.append("-" * len(lines[0]))
    for parametrization in ("sp", "mup"):
        sizes = coord_sizes(setup, parametrization)
        for step in range(1, setup.steps + 1):
            for name in QUANTITIES:
                if (setup.widths[0], step, name) not in sizes:
                    continue
                cells = [f"{sizes[w, step, name]:.4g}" for w in setup.widths]
                row = [parametrization, str(step), name, *cells, f"{slope(sizes, setup.widths, step, name):+.2f}"]
                lines.append(" | ".join(row))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="32,64,128,256", help="comma-separated d_model values")
    parser.add_argument("--base-width", type=int, default=32, help="mup_base_d_model")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--moe", action="store_true", help="MoE feed-forward (4 experts, top-2, G=2) in both layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    configure(args.threads)
    setup = Setup(
        widths=tuple(int(w) for w in args.widths.split(",")),
        base_width=args.base_width,
        steps=args.steps,
        lr=args.lr,
        moe=args.moe,
        seed=args.seed,
    )
    print(f"# mup coordinate check: {'MoE' if setup.moe else 'dense'}, lr {setup.lr}, base width {setup.base_width}")
    print(table(setup))


if __name__ == "__main__":
    main()
