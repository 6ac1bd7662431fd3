"""The run record (``provenance.json``): one typed, versioned description of how a checkpoint was made.

Every producer (training, surgery, import) builds a :class:`RunRecord` and writes it with
:func:`write_record`; every consumer (collect, the provenance tracer, a child run) reads it with
:func:`read_record`, which refuses records of another schema version instead of guessing at missing keys.
A child keeps an :class:`Ancestor` summary of each run before it (``lineage``), enough to recover D1, the
sunk compute and the chain of code hashes without opening the parents. Torch-free: collect reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json, write_json
from stages.core.cli import UserError
from stages.core.kinds import RECORD_KINDS
from stages.core.machine import Machine

SCHEMA_VERSION = 2  # 1: the untyped records written before this module existed
RECORD = "provenance.json"


@dataclass(frozen=True)
class DataRef:
    """The corpus a run read, and where in its shared token stream it started and stopped."""

    manifest: str = ""
    train_sha256: str = ""
    tokenizer_sha256: str = ""
    data_seed: int = 0
    start_sequence: int = 0
    end_sequence: int = 0
    epochs: float = 0.0


@dataclass(frozen=True)
class ParentRef:
    """The checkpoint a run started from, pinned by the sha256 of its weights."""

    path: str
    weights_sha256: str


@dataclass(frozen=True)
class SourceRef:
    """Where an imported checkpoint came from: its format, folder and the sha256 of each file read."""

    format: str
    path: str
    sha256: dict[str, str]


@dataclass(frozen=True)
class Ancestor:
    """What a child keeps of one earlier run of its chain."""

    run_id: str
    kind: str
    labels: dict[str, str] = field(default_factory=dict)
    tokens: int = 0
    tokens_known: bool = True
    steps: int = 0
    flops: float = 0.0
    flops_convention: str | None = None
    N_active: int = 0
    N_total: int = 0
    weights_sha256: str = ""
    code_hash: str = ""
    lr_policy: str | None = None
    peak_lr: float | None = None
    recipe: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunRecord:
    """How one checkpoint was made. Training fills the token, FLOP and schedule fields; surgery the recipe."""

    run_id: str
    kind: str
    code_hash: str
    torch_version: str
    labels: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    tokens: int = 0  # tokens this run trained on (0 for surgery; for an import, its stated pre-training)
    tokens_known: bool = True  # False: an import whose pre-training was not stated (tokens, flops 0 = unknown)
    steps: int = 0
    tokens_per_step: int = 0
    flops: float = 0.0  # training FLOPs of this run alone
    flops_per_token: float = 0.0
    flops_convention: str | None = None
    N_total: int = 0
    N_active: int = 0
    lr_policy: str | None = None
    peak_lr: float | None = None
    train: dict[str, Any] | None = None  # the training option group as run
    schedule: dict[str, Any] | None = None  # warmup, prior and total steps as run
    recipe: dict[str, Any] | None = None  # the upcycling recipe (surgery records)
    threads: int = 0
    data: DataRef = field(default_factory=DataRef)
    parent: ParentRef | None = None
    lineage: tuple[Ancestor, ...] = ()
    source: SourceRef | None = None
    weights_sha256: str = ""
    router_health: str | None = None  # an MoE training run's router-health verdict (stages.training.metrics)
    backend: str | None = None  # who trained it when not our trainer: "nanotron@<commit>" (train.backend)
    machine: Machine | None = None  # commit, CPU, kernel path and GPU of the process that made it
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in RECORD_KINDS:
            raise UserError(f"run record {self.run_id}: unknown kind {self.kind!r} (known: {', '.join(RECORD_KINDS)})")

    def as_ancestor(self) -> Ancestor:
        names = {f.name for f in dataclasses.fields(Ancestor)}
        return Ancestor(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def as_parent(self, path: str) -> ParentRef:
        """How a child names this run: its directory and the sha256 of its weights."""
        return ParentRef(path=path, weights_sha256=self.weights_sha256)

    def child_lineage(self) -> tuple[Ancestor, ...]:
        """The lineage of a run started from this one: this run's lineage plus this run."""
        return (*self.lineage, self.as_ancestor())

    def surgery_child(self, path: str, **fields: Any) -> RunRecord:
        """The record of a checkpoint made from this run by surgery (upcycling, growth): same data and FLOP
        convention, this run as parent and last ancestor; ``fields`` give its identity, sizes and recipe."""
        return RunRecord(
            flops_convention=self.flops_convention,
            data=self.data,
            parent=self.as_parent(path),
            lineage=self.child_lineage(),
            **fields,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> RunRecord:
        version = data.get("schema_version", 1)
        if version != SCHEMA_VERSION:
            raise UserError(
                f"{where}: run record schema version {version}, this code reads {SCHEMA_VERSION}; "
                "rerun the run that wrote it"
            )
        try:
            values = dict(data)
            values["data"] = DataRef(**values.get("data", {}))
            values["parent"] = ParentRef(**values["parent"]) if values.get("parent") else None
            values["source"] = SourceRef(**values["source"]) if values.get("source") else None
            values["lineage"] = tuple(Ancestor(**a) for a in values.get("lineage", ()))
            values["machine"] = Machine(**values["machine"]) if values.get("machine") else None
            return cls(**values)
        except TypeError as err:
            raise UserError(f"{where}: not a valid run record ({err})") from None


def write_record(directory: str | Path, record: RunRecord) -> None:
    """The one writer of ``provenance.json`` (atomic, sorted keys)."""
    write_json(Path(directory) / RECORD, record.to_dict())


def read_record(directory: str | Path) -> RunRecord:
    """The run record of a checkpoint directory, or a one-line error naming the file."""
    path = Path(directory) / RECORD
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return RunRecord.from_dict(data, str(path))
