"""What every checkpoint surgery writes: the new model with its run record (a child of the parent's) and the
surgery report, so that upcycling, growth and expert expansion record their products one way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stages.core.artifacts import write_json
from stages.core.codehash import code_hash
from stages.core.machine import probe
from stages.core.options import as_dict
from stages.core.record import RunRecord
from stages.model.checkpoint import save_checkpoint
from stages.model.compute import param_counts
from stages.model.transformer import Transformer


def save_surgery(
    out: Path,
    model: Transformer,
    report: dict[str, Any],
    parent: RunRecord,
    parent_path: str,
    kind: str,
    recipe: Any,
    run_id: str,
    labels: dict[str, Any],
    seed: int,
    threads: int | None = None,
) -> None:
    """``model`` at ``out`` with its record (``kind``: the surgery, also the stage whose code is hashed) and
    ``surgery.json``; ``threads`` is recorded when given."""
    counts = param_counts(model.cfg)
    record = parent.surgery_child(
        parent_path,
        run_id=run_id,
        kind=kind,
        code_hash=code_hash(kind),
        torch_version=torch.__version__,
        labels=labels,
        seed=seed,
        N_total=counts.total(),
        N_active=counts.active(),
        recipe=as_dict(recipe),
        machine=probe(),
        **({} if threads is None else {"threads": threads}),
    )
    save_checkpoint(out, model, record)
    write_json(out / "surgery.json", report)
