"""The nanotron backend next to the torch backend on the same jobs: tokens/s, MFU and the loss difference.

    .venv/bin/python bench/nanotron_vs_torch.py                        # GPU: bf16, paper-like small shapes
    .venv/bin/python bench/nanotron_vs_torch.py --device cpu --small   # smoke test on a CPU (fp32, CPU mode)

For each job (a dense model and an upcycled-style MoE: top-2 of 8 renormalised, balancing loss 0.01) both
backends train the same steps from the same init and data through ``python -m stages.train`` (the command the
DAG runs; nanotron through ``make nanotron-env``'s environment). Prints, per job: tokens/s of each backend (the
torch trainer's own rate; nanotron's per-iteration ``tokens_per_sec``, median after the first 3 iterations),
their ratio, the MFU of each against ``--peak-tflops`` (GPU datasheet, dense bf16; 6N FLOPs per token), and the
largest per-step |train loss difference| and the final losses. The corpus is synthetic (a learnable token
process with a real word-level tokenizer), written to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.core.artifacts import sha256_file, write_json  # noqa: E402
from stages.interop.nanotron_run import parse_log  # noqa: E402
from stages.model.compute import flops_per_token  # noqa: E402
from stages.model.config import ModelConfig, MoEConfig  # noqa: E402
from stages.training.options import TrainConfig  # noqa: E402

VOCAB = 4096
JOBS = {
    "dense": {"n_layer": 8, "d_model": 512, "n_head": 8, "d_ff": 2048},
    "moe_e8k2": {
        "n_layer": 8, "d_model": 512, "n_head": 8, "d_ff": 2048,
        "moe": dataclasses.asdict(MoEConfig(experts=8, top_k=2, norm_topk_prob=True, aux_loss_coef=0.01)),
    },
}  # fmt: skip
SMALL = {"n_layer": 2, "d_model": 64, "n_head": 4, "d_ff": 128}


def corpus(directory: Path, tokens: int) -> Path:
    """A corpus directory (data-stage layout) of ``tokens`` training tokens and a real tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = (np.cumsum(rng.integers(1, 4, size=tokens + 65_536)) % VOCAB).astype("<u2")
    ids[:tokens].tofile(directory / "train.bin")
    ids[tokens:].tofile(directory / "val.bin")
    words = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    Tokenizer(models.WordLevel(words, unk_token="<|endoftext|>")).save(str(directory / "tokenizer.json"))
    files = {
        k: {"name": f, "sha256": sha256_file(directory / f)}
        for k, f in (("train", "train.bin"), ("val", "val.bin"), ("tokenizer", "tokenizer.json"))
    }
    write_json(directory / "manifest.json", {"vocab_size": VOCAB, "files": files})
    return directory


def train(backend: str, model: dict, train: TrainConfig, data: Path, out: Path, tokens: int) -> str:
    """Run one job through the stage command; returns its stderr (the trainer's and nanotron's log lines)."""
    args = [sys.executable, "-m", "stages.train", "--kind", "scratch_moe" if "moe" in model else "dense"]
    args += ["--run-id", f"bench/{out.name}", "--data", str(data), "--tokens", str(tokens)]
    args += ["--model", json.dumps(model), "--train", json.dumps(dataclasses.asdict(train))]
    args += ["--seed", "1", "--data-seed", "2", "--out", str(out), "--work-dir", str(out.with_suffix(".work"))]
    env = {**os.environ, "NANOTRON_NPROC_PER_NODE": "1"}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{backend} {out.name} failed:\n{done.stderr[-3000:]}")
    return done.stderr


def rate(backend: str, log: str) -> float:
    """Training tokens/s: the torch trainer's summary line, or nanotron's per-iteration median."""
    if backend == "torch":
        match = re.search(r": ([\d,]+) tokens/s", log)
        return float(match[1].replace(",", "")) if match else float("nan")
    per_step = [v["tokens_per_sec"] for k, v in sorted(parse_log(log).items()) if k > 3 and "tokens_per_sec" in v]
    return statistics.median(per_step) if per_step else float("nan")


def losses(out: Path) -> list[float]:
    import csv

    with open(out / "metrics.csv") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--small", action="store_true", help="tiny shapes (a CPU smoke test)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    p.add_argument("--out", default="/tmp/nanotron_vs_torch")
    a = p.parse_args()
    seq = 32 if a.small else a.seq_len
    tokens = a.steps * a.batch * seq
    out = Path(a.out)
    data = corpus(out / "corpus", tokens + a.batch * (seq + 1))
    dtype = "bf16" if a.device == "cuda" else "fp32"
    base = TrainConfig(seq_len=seq, batch_size=a.batch, lr=1e-3, warmup_steps=5, device=a.device, dtype=dtype)
    base = dataclasses.replace(base, log_every=1, eval_every=0)
    rows = []
    for name, model in JOBS.items():
        model = {**model, **SMALL} if a.small else model
        cfg = ModelConfig.from_dict({**model, "vocab_size": VOCAB, "max_seq_len": seq})
        fpt = flops_per_token(cfg, seq)
        result = {}
        for backend in ("torch", "nanotron"):
            run = out / f"{name}_{backend}"
            log = train(backend, model, dataclasses.replace(base, backend=backend), data, run, tokens)
            result[backend] = (rate(backend, log), losses(run))
        (t_rate, t_loss), (n_rate, n_loss) = result["torch"], result["nanotron"]
        diff = max(abs(x - y) for x, y in zip(t_loss, n_loss, strict=True))
        mfu = [r * fpt / (a.peak_tflops * 1e12) if a.device == "cuda" else float("nan") for r in (t_rate, n_rate)]
        rows.append((name, t_rate, n_rate, n_rate / t_rate, *mfu, diff, t_loss[-1], n_loss[-1]))
    print(f"device {a.device} ({dtype}), {a.steps} steps x {a.batch} x {seq} tokens, peak {a.peak_tflops} TFLOP/s")
    print("job        torch tok/s  nanotron tok/s  ratio  MFU torch  MFU nanotron  max|dloss|  final torch  nanotron")
    for r in rows:
        print(f"{r[0]:<10} {r[1]:>11,.0f} {r[2]:>15,.0f} {r[3]:>6.2f} {r[4]:>10.1%} {r[5]:>13.1%} {r[6]:>11.2e}"
              f" {r[7]:>12.4f} {r[8]:>9.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
