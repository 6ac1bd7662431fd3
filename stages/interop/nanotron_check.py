"""Our nanotron backend checked by nanotron's own code, on the grid of a config (``stages.check_nanotron``).

Three checks, each against the nanotron installed in this Python (``import nanotron``, the pinned commit):

* config: the training YAML of every job of the grid (the backend writes the same) parses with nanotron's
  ``get_config_from_file`` (dacite, strict), its steps and batch are ours, and nanotron's own
  ``lr_scheduler_builder`` gives our learning rate at every step after the warmup (the warmup runs one step
  later: nanotron's lr of step s is ours of step s - 1, compared too). A job nanotron cannot train is listed
  with its one-line refusal.
* data: a run's first steps converted from a corpus (:mod:`stages.interop.nanotron_data`) and read back with
  the reader the YAML selects (``tokenized_bytes.build_dataset``, ``use_old_brrr_dataloader``) and with
  datatrove's ``DatatroveFolderDataset`` where it imports, batched by nanotron's ``MegatronPretrainingSampler``
  for every data-parallel rank, equal our ``TrainStream`` windows of each step, token for token.
* weights: our random-initialised model of each shape of the grid, exported to nanotron's layout, built by
  nanotron from the job's YAML with the backend's model class (``build_model``, ``mark_tied_parameters``,
  ``load_weights``) and run on the same tokens in fp32: the largest absolute logit difference and the argmax
  agreement.

On a GPU node nothing is patched. ``device="cpu"`` (for a machine without CUDA) runs nanotron in the backend's
CPU mode (:mod:`stages.interop.nanotron_cpu`: gloo, CUDA devices redirected, pure-torch ``flash_attn`` and
``grouped_gemm``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from stages.core.cli import UserError
from stages.core.options import from_json
from stages.corpus.shards import TrainStream, open_corpus
from stages.interop.nanotron import write_nanotron_model
from stages.interop.nanotron_config import NanotronJob, refusals, routing_options, training_config
from stages.interop.nanotron_data import write_stream
from stages.model.config import ModelConfig
from stages.model.transformer import Transformer, seed_generator
from stages.training.options import TrainConfig
from stages.training.schedule import Schedule, decay_steps, warmup_steps
from stages.workflow.grid import Grid

LOGIT_TOLERANCE = 1e-3  # fp32, flash-attention-free paths agree to ~1e-5 (reference/nanotron.md section 9)
LR_TOLERANCE = 1e-12


@dataclasses.dataclass(frozen=True)
class GridJob:
    """One training job of the grid as the nanotron backend would run it."""

    run_id: str
    kind: str
    model: ModelConfig
    train: TrainConfig
    steps: int
    seed: int
    data_seed: int


def grid_jobs(cfg: dict[str, Any]) -> list[GridJob]:
    """Every training job of a validated config (a wsd budget is one job, as under the nanotron backend)."""
    grid = Grid(cfg)
    jobs = []
    for run in grid.runs:
        train = from_json(TrainConfig, grid.run_train_json(run), "train")
        jobs.append(
            GridJob(
                run.run_id,
                run.kind,
                grid.trained_model(run),
                train,
                grid.steps(run),
                grid.run_seed(run),
                grid.data_seed(run.model),
            )
        )
    return jobs


def nanotron_job(job: GridJob, out: Path, dp: int, eot_id: int, token_size: int) -> NanotronJob:
    """The backend's NanotronJob of a grid job, with its files under ``out``."""
    t = job.train
    warmup = warmup_steps(job.steps, t.warmup_frac, fixed=t.warmup_steps)
    return NanotronJob(
        run_id=job.run_id,
        seed=job.seed,
        data_seed=job.data_seed,
        model=job.model,
        train=t,
        steps=job.steps,
        warmup=warmup,
        decay=decay_steps(job.steps, warmup, t.decay_frac) if t.lr_policy == "wsd" else 0,
        dp=dp,
        micro_batch=t.micro_batch_size or t.batch_size // dp,
        eot_id=eot_id,
        init=out / "init",
        data=out / "data",
        tokenizer=out / "tokenizer",
        token_size=token_size,
        checkpoints=out / "checkpoints",
        checkpoint_interval=job.steps,
    )


def our_schedule(nt: NanotronJob) -> Schedule:
    t = nt.train
    return Schedule(
        policy=t.lr_policy,
        peak_lr=t.lr,
        min_lr=t.lr * t.min_lr_ratio,
        total_steps=nt.steps,
        warmup_steps=nt.warmup,
        decay_steps=nt.decay or decay_steps(nt.steps, nt.warmup, t.decay_frac),
        decay_shape=t.decay_shape,
    )


class _Optimizer:
    """What ``lr_scheduler_builder`` reads of nanotron's optimizer wrapper."""

    def __init__(self, lr: float) -> None:
        self.base = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)

    def get_base_optimizer(self) -> torch.optim.Optimizer:
        return self.base


def check_config(nt: NanotronJob, path: Path) -> dict[str, Any]:
    """Parse the job's YAML with nanotron and compare its steps, batch and every step's lr with ours."""
    from nanotron.config import get_config_from_file
    from nanotron.helpers import lr_scheduler_builder

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(training_config(nt), sort_keys=False))
    parsed = get_config_from_file(str(path))
    t = nt.train
    problems = []
    if parsed.tokens.train_steps != nt.steps:
        problems.append(f"train_steps {parsed.tokens.train_steps} != {nt.steps}")
    if parsed.global_batch_size_in_tokens != t.batch_size * t.seq_len:
        problems.append(f"global batch {parsed.global_batch_size_in_tokens} tokens != {t.batch_size * t.seq_len}")
    args = parsed.optimizer.learning_rate_scheduler
    scheduler = lr_scheduler_builder(_Optimizer(args.learning_rate), args, parsed.tokens.train_steps)
    theirs = np.array([args.learning_rate * scheduler.lr_lambdas[0](s) for s in range(nt.steps)])
    schedule = our_schedule(nt)
    ours = np.array([schedule.lr(s) for s in range(nt.steps)])
    warm = nt.warmup if t.lr_policy != "constant_min" else 0
    after = float(np.abs(theirs[warm:] - ours[warm:]).max()) if nt.steps > warm else 0.0
    lag = float(np.abs(theirs[1 : warm + 1] - ours[:warm]).max()) if warm else 0.0
    if after > LR_TOLERANCE or lag > LR_TOLERANCE:
        problems.append(f"lr differs: {after:.3g} after the warmup, {lag:.3g} in the (one-step lagged) warmup")
    return {
        "model": type(parsed.model.model_config).__name__,
        "moe": parsed.model.model_config.moe_config is not None,
        "steps": nt.steps,
        "max_lr_diff_after_warmup": after,
        "max_lr_diff_warmup_lagged": lag,
        "first_step_lr": float(theirs[0]),
        "problems": problems,
    }


def check_data(corpus_dir: Path, job: GridJob, dp: int, steps: int, out: Path) -> dict[str, Any]:
    """Convert the first ``steps`` steps of ``job``'s stream and read them back with nanotron's readers."""
    from nanotron.config import NanosetDatasetsArgs
    from nanotron.data.samplers import MegatronPretrainingSampler
    from nanotron.data.tokenized_bytes import build_dataset

    t = job.train
    corpus = open_corpus(corpus_dir, verify=("train", "tokenizer"))
    stream = TrainStream(corpus.tokens("train"), t.seq_len, job.data_seed)
    count = steps * t.batch_size
    tokenizer = str(corpus_dir.resolve())
    folder = out / "data"
    write_stream(stream, 0, count, corpus.dtype, tokenizer, folder)
    expected = stream.batch(0, count).numpy()
    size = corpus.dtype.itemsize
    args = NanosetDatasetsArgs(dataset_folder=[str(folder)], tokenizer_name=tokenizer, token_size_in_bytes=size)
    result: dict[str, Any] = {"windows": count, "seq_len": t.seq_len, "metadata": args.token_size_in_bytes == size}
    readers = {
        "tokenized_bytes (use_old_brrr_dataloader, as the YAML)": lambda: build_dataset(
            str(folder), t.seq_len, size, use_old_brrr_dataloader=True, skip_in_stream=False, num_samples=count
        ),
        "tokenized_bytes (datatrove reader)": lambda: build_dataset(str(folder), t.seq_len, size, num_samples=count),
    }
    with contextlib.suppress(ImportError):
        from datatrove.utils.dataset import DatatroveFolderDataset

        readers["datatrove DatatroveFolderDataset"] = lambda: DatatroveFolderDataset(
            str(folder), t.seq_len, filename_pattern="*.ds", token_size=size
        )
    for name, make in readers.items():
        try:
            dataset = make()
            got = np.stack([np.asarray(dataset[i]["input_ids"]) for i in range(count)])
            result[name] = "equal" if np.array_equal(got, expected) else "DIFFERENT"
        except Exception as err:  # a reader this nanotron/datatrove pair cannot build: reported, not fatal
            result[name] = f"not usable here: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
    micro = t.micro_batch_size or t.batch_size // dp
    per_rank = [
        list(
            MegatronPretrainingSampler(
                total_samples=count,
                consumed_samples=0,
                micro_batch_size=micro,
                data_parallel_rank=rank,
                data_parallel_size=dp,
                global_batch_size=t.batch_size,
            )
        )
        for rank in range(dp)
    ]
    accumulation = t.batch_size // (dp * micro)
    ok = True
    for step in range(steps):
        batches = [mb for rank in per_rank for mb in rank[step * accumulation : (step + 1) * accumulation]]
        seen = sorted(i for mb in batches for i in mb)
        ok &= seen == list(range(step * t.batch_size, (step + 1) * t.batch_size))
    result[f"sampler steps = our batches (dp {dp}, micro batch {micro})"] = "equal" if ok else "DIFFERENT"
    return result


def init_process_group(device: str) -> None:
    """A one-process world for nanotron: on CPU gloo and CUDA calls redirected (:mod:`stages.interop.nanotron_cpu`,
    before nanotron is imported); on GPU nanotron starts NCCL from these variables."""
    if torch.distributed.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    if device == "cpu":
        from stages.interop import nanotron_cpu

        nanotron_cpu.enable(timeout_s=600.0)


def check_logits(nt: NanotronJob, config_path: Path, device: str, seed: int = 0) -> dict[str, Any]:
    """Our model of ``nt`` (seeded random init) against nanotron's build of the YAML loading its export."""
    from nanotron.config import get_config_from_file
    from nanotron.models import build_model
    from nanotron.parallel import ParallelContext
    from nanotron.serialize import load_weights
    from nanotron.trainer import mark_tied_parameters

    from stages.interop.nanotron_model import Routing, model_class

    ours = Transformer(nt.model)
    ours.init_weights(seed_generator(seed))
    ours.eval()
    write_nanotron_model(ours, nt.init, routed=True)
    routing = routing_options(nt.model)
    builder = model_class(Routing(**routing) if routing else None)
    config_path.write_text(yaml.safe_dump(training_config(nt), sort_keys=False))
    parsed = get_config_from_file(str(config_path))
    dev = torch.device(device)
    context = ParallelContext(tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1)
    model = build_model(
        model_builder=lambda: builder(
            config=parsed.model.model_config, parallel_context=context, parallel_config=parsed.parallelism
        ),
        parallel_context=context,
        dtype=torch.float32,
        device=dev,
    )
    mark_tied_parameters(model=model, parallel_context=context, parallel_config=parsed.parallelism)
    load_weights(model=model, parallel_context=context, root_folder=Path(parsed.model.init_method.path))
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    batch, length = 2, min(64, nt.model.max_seq_len)
    tokens = torch.randint(0, nt.model.vocab_size, (batch, length), generator=generator)
    positions = torch.arange(length).repeat(batch, 1)
    with torch.no_grad():
        theirs = model.model(input_ids=tokens.to(dev), position_ids=positions.to(dev)).float().cpu()
        mine = ours(tokens).logits.float().reshape(batch * length, -1)
    theirs = theirs.reshape(batch * length, -1)[:, : nt.model.vocab_size]
    return {
        "params": sum(p.numel() for p in ours.parameters()),
        "max_abs_logit_diff": float((theirs - mine).abs().max()),
        "argmax_agreement": float((theirs.argmax(-1) == mine.argmax(-1)).float().mean()),
        "logit_scale": float(mine.abs().max()),
    }


def shrink(cfg: ModelConfig, layers: int) -> ModelConfig:
    """The model with only its first ``layers`` blocks (same widths, experts and routing), for a cheaper check."""
    if not layers or layers >= cfg.n_layer:
        return cfg
    moe = cfg.moe
    if moe is not None and not isinstance(moe.layers, str):
        moe = dataclasses.replace(moe, layers=tuple(i for i in moe.layers if i < layers) or (0,))
    return dataclasses.replace(cfg, n_layer=layers, moe=moe)


def say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


def require_nanotron() -> str:
    """nanotron's version marker, or a one-line error saying how to install it."""
    try:
        import nanotron.config  # noqa: F401
        from nanotron.constants import CHECKPOINT_VERSION
    except ImportError as err:
        raise UserError(
            f"nanotron is not importable here ({err}); run `make nanotron-env`, then this command with "
            ".nanotron/venv/bin/python (docs/cluster.md)"
        ) from None
    return str(CHECKPOINT_VERSION)


def refusal(job: GridJob) -> str | None:
    """Every reason nanotron cannot train ``job`` (None: it can)."""
    reasons = refusals(job.model, job.train)
    return "; ".join(reasons) if reasons else None


def load_grid_config(configfiles: list[str]) -> dict[str, Any]:
    """The config Snakemake builds from ``configfiles`` (over config/config.yaml), validated as a torch-backend
    study so that every job is listed: those nanotron cannot train are reported here one by one instead."""
    from stages.workflow.accounting import DEFAULT_CONFIG, merge
    from stages.workflow.config import load_yaml, validate_config

    cfg: dict[str, Any] = load_yaml(DEFAULT_CONFIG)
    for path in configfiles:
        cfg = merge(cfg, load_yaml(path))
    cfg = merge(cfg, {"train": {"backend": "torch"}})
    return validate_config(cfg)


def run_checks(
    configfiles: list[str], out: Path, corpus: Path | None, dp: int, device: str, data_steps: int, layers: int
) -> dict[str, Any]:
    """All three checks on the grid of ``configfiles``; returns the report (and prints it as it goes)."""
    init_process_group(device)  # first: the CPU mode puts its kernel stand-ins on the path before nanotron imports
    version = require_nanotron()
    cfg = load_grid_config(configfiles)
    jobs = grid_jobs(cfg)
    say(f"nanotron checkpoint version {version}; {len(jobs)} training jobs in {' + '.join(configfiles) or 'config'}")
    report: dict[str, Any] = {"configs": {}, "refused": {}, "data": None, "logits": {}}
    trainable = []
    for job in jobs:
        reason = refusal(job)
        if reason:
            report["refused"][job.run_id] = reason
            say(f"REFUSED {job.run_id}: {reason}")
            continue
        trainable.append(job)
        size = 2 if job.model.vocab_size <= 1 << 16 else 4
        nt = nanotron_job(job, out / "jobs" / job.run_id, dp, eot_id=0, token_size=size)
        result = check_config(nt, out / "jobs" / job.run_id / "config.yaml")
        report["configs"][job.run_id] = result
        status = "ok" if not result["problems"] else "PROBLEM " + "; ".join(result["problems"])
        say(
            f"config {job.run_id}: {result['model']} moe={result['moe']} steps {result['steps']}  lr max diff "
            f"{result['max_lr_diff_after_warmup']:.2e} after warmup, {result['max_lr_diff_warmup_lagged']:.2e} "
            f"lagged warmup; first-step lr {result['first_step_lr']:.3g}: {status}"
        )
    if corpus is not None and trainable:
        report["data"] = check_data(corpus, trainable[0], dp, data_steps, out / "data_check")
        say(f"data ({trainable[0].run_id}, {data_steps} steps from {corpus}): {report['data']}")
    shapes: dict[str, GridJob] = {}
    for job in trainable:
        shapes.setdefault(yaml.safe_dump(shrink(job.model, layers).to_dict(), sort_keys=True), job)
    for i, job in enumerate(shapes.values()):
        small = dataclasses.replace(job, model=shrink(job.model, layers))
        where = out / "logits" / f"shape_{i}"
        nt = nanotron_job(small, where, 1, eot_id=0, token_size=2)
        result = check_logits(nt, where / "config.yaml", device)
        report["logits"][job.run_id] = result
        moe = small.model.moe
        what = f"E{moe.experts} k{moe.top_k} G{moe.granularity}" if moe else "dense"
        say(
            f"logits {job.run_id} ({small.model.n_layer} layers, d {small.model.d_model}, {what}, "
            f"{result['params']:,} params): max |diff| {result['max_abs_logit_diff']:.2e} (logits up to "
            f"{result['logit_scale']:.2f}), argmax agreement {result['argmax_agreement']:.1%}"
        )
    return report


def failures(report: dict[str, Any]) -> list[str]:
    """What did not verify (refusals are expected answers, not failures)."""
    bad = [f"config {k}: {'; '.join(v['problems'])}" for k, v in report["configs"].items() if v["problems"]]
    data = report["data"] or {}
    bad += [f"data {k}: {v}" for k, v in data.items() if v == "DIFFERENT" or v is False]
    bad += [
        f"logits {k}: {v['max_abs_logit_diff']:.2e}"
        for k, v in report["logits"].items()
        if v["max_abs_logit_diff"] > LOGIT_TOLERANCE or v["argmax_agreement"] < 1.0
    ]
    return bad
