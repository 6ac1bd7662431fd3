"""The process torchrun starts for a nanotron job: nanotron's trainer with our model class, schedule and fixes.

``torchrun ... -m stages.interop.nanotron_entry --config-file config.yaml --job job.json`` in the nanotron
environment (its own numpy < 2), with the repository on ``PYTHONPATH``; the backend
(:mod:`stages.training.nanotron_backend`) writes both files and launches it. This replaces nanotron's
``run_train.py`` only to pass its ``DistributedTrainer`` our model class (the documented extension point) and
our fixes (:mod:`stages.interop.nanotron_trainer`); the data loader is ``run_train.py``'s own, read from the
checkout at ``NANOTRON_HOME``. With ``device: cpu`` in the job, nanotron runs on the CPU with gloo first
(:mod:`stages.interop.nanotron_cpu`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def load_run_train(home: Path):
    """nanotron's ``run_train.py`` as a module (it sits at the root of the checkout, not in the package)."""
    spec = importlib.util.spec_from_file_location("nanotron_run_train", home / "run_train.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"{home / 'run_train.py'}: cannot be loaded (NANOTRON_HOME must be a nanotron checkout)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m stages.interop.nanotron_entry", description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, help="nanotron's training YAML")
    p.add_argument("--job", required=True, help="job.json: our schedule, routing and metrics file")
    args = p.parse_args(argv)
    data = json.loads(Path(args.job).read_text(encoding="utf-8"))
    import torch

    torch.set_num_threads(int(data["threads"]))
    if data["device"] == "cpu":
        from stages.interop import nanotron_cpu

        nanotron_cpu.enable(float(data["timeout_s"]))
    from stages.interop.nanotron_trainer import ProjectTrainer, TrainerJob, install_fixes

    install_fixes()
    run_train = load_run_train(Path(os.environ["NANOTRON_HOME"]))
    trainer = ProjectTrainer(args.config_file, TrainerJob.from_json(data))
    trainer.train(run_train.get_dataloader(trainer))


if __name__ == "__main__":
    main(sys.argv[1:])
