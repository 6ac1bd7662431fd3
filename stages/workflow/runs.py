"""The runs of a study: their identities and paths, labels, seeds, and the stable segments of wsd families.

A run's path under the study root is its kind's template (stages.core.kinds) filled with its fields; a replica
label (``s@2``) trains model ``s`` with its second seed. Torch-free: the Snakefile uses it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from stages.core import kinds

RESULTS = "results"
REPLICA = "@"  # s@2: model s trained again with its second seed (grid.replicas)


def shape_name(model: str) -> str:
    """The grid model a model label trains: 's@2' -> 's'."""
    return model.split(REPLICA, 1)[0]


def replica_index(model: str) -> int:
    """Which seed of its cell a model label is: 's' -> 1, 's@2' -> 2."""
    return int(model.split(REPLICA, 1)[1]) if REPLICA in model else 1


def study_root(study: str) -> str:
    """Where every output of a study lives: results/<study>, or results/ itself for the unnamed study ("")."""
    return f"{RESULTS}/{study}" if study else RESULTS


def lr_label(lr: float | str) -> str:
    """A learning rate as run paths spell it (lr_0.003): Python's shortest repr, so it reads back exactly."""
    return repr(float(lr))


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from a run's identity (base seed, kind, model, moe, ...)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@dataclass(frozen=True, order=True)
class Run:
    """One trained model of the grid; ``run_id`` is its path under results/ (its kind's template, core.kinds)."""

    kind: str  # an entry of stages.core.kinds.KINDS
    model: str
    moe: str = ""
    d1: str = ""
    d2: str = ""
    d: str = ""
    lr: str = ""  # lr_sweep: the peak learning rate as its path spells it (lr_label)
    growth: str = ""  # grown: the growth variant (an entry of config["growth"])
    expansion: str = ""  # expanded: the expansion variant (an entry of config["expansion"])
    root: str = field(default=RESULTS, compare=False, repr=False)  # the study root (study_root)

    @property
    def spec(self) -> kinds.RunKind:
        return kinds.KINDS[self.kind]

    def fields(self) -> dict[str, str]:
        """The fields its kind's path templates are written in."""
        return {name: getattr(self, name) for name in ("model", "moe", "d1", "d2", "d", "lr", "growth", "expansion")}

    @property
    def run_id(self) -> str:
        return self.spec.run_id(**self.fields())

    @property
    def directory(self) -> str:
        return f"{self.root}/{self.run_id}"

    @property
    def eval_json(self) -> str:
        return f"{self.root}/eval/{self.run_id}/eval.json"

    def labels(self) -> dict[str, str]:
        fields = {"kind": self.kind, "model": shape_name(self.model), "moe": self.moe}
        fields.update(D1=self.d1, D2=self.d2, D=self.d, lr=self.lr)
        fields.update(growth=self.growth, expansion=self.expansion)
        if replica_index(self.model) > 1:
            fields["replica"] = str(replica_index(self.model))
        return {k: v for k, v in fields.items() if v}

    @property
    def budget(self) -> str:
        """The token budget this run trains for (D1 of a dense run, D2 of a continuation, D from scratch)."""
        return str(getattr(self, self.spec.budget))

    @property
    def family(self) -> str:
        """The runs that differ only in their budget: under wsd they share one stable run."""
        return self.run_id.rsplit("/", 1)[0]

    @property
    def variant(self) -> str:
        """Its entry of its kind's variant section (MoE, growth, expansion; '' for none): where its lr policy is set."""
        return str(getattr(self, self.spec.variant)) if self.spec.variant else ""

    @property
    def identity(self) -> str:
        """Its variants (an expanded run's MoE and expansion), part of its seed's identity ('' for none)."""
        return "/".join(v for v in (self.moe, self.growth, self.expansion) if v)


@dataclass(frozen=True, order=True)
class Segment:
    """A stable-phase job of a wsd family: trains from ``previous`` to ``step`` and saves a branch state there."""

    family: str
    step: int  # the decay start of ``run``: where its cooldown branches off
    previous: int  # the step it starts from (0: from the initial model)
    run: Run  # the budget whose cooldown starts at ``step``; the segment trains with its options

    @property
    def state(self) -> str:
        return branch_state(self.family, self.step, self.run.root)


def branch_state(family: str, step: int, root: str = RESULTS) -> str:
    return f"{root}/stable/{family}/b_{step}.pt"
