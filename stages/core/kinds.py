"""The table of run kinds: every kind of trained run the study knows, described once.

A run kind fixes where its runs live (``path``: the run_id template under the study root; its first segment is the
kind's folder and the name of the rule that trains it), which lists of its grid section it crosses with the models
(``axes``) and which of them is its own token budget, whether it continues a trained checkpoint (a dense one, or an
MoE from scratch for an expanded MoE; through which surgery, from which folder), where its lr policy is set, how it
is seeded, and how reports name and draw it. The grid (stages.workflow.grid), the config checks and schema, the
wildcards of the rules, the trainer, the run records, the runs table, the findings and the figures read it from
here; adding a kind is one entry below plus the rule that trains it. Code that treats one kind specially names it
through the constants below, never by a string of its own.

Stdlib only: the Snakefile and the runs table import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# the trained kinds, as run records, the runs table and ``stages.train --kind`` spell them
DENSE = "dense"
SCRATCH_MOE = "scratch_moe"
UPCYCLED = "upcycled"
DENSE_CONT = "dense_cont"
LR_SWEEP = "lr_sweep"
GROWN = "grown"
EXPANDED = "expanded"
# kinds of run records written by checkpoint surgery and import, not by training (stages.upcycle, .grow, .expand,
# .export)
UPCYCLE = "upcycle"
GROW = "grow"
EXPAND = "expand"
IMPORT = "import"
# where a surgery writes the initialisation a continued run starts from (under the study root)
SURGERY_PATHS = {
    UPCYCLE: "upcycled/{model}/d1_{d1}/{moe}",
    GROW: "grow/{model}/d1_{d1}/{growth}",
    EXPAND: "expand/{model}/{moe}/d1_{d1}/{expansion}",
}

BUDGETS = ("d1", "d2", "d")  # the token-budget fields of a run (path labels d1_16K, d2_8K, d_32K)


@dataclass(frozen=True)
class RunKind:
    """One kind of trained run."""

    name: str
    path: str  # run_id template under the study root; its first segment is the folder and the training rule
    axes: tuple[str, ...]  # the lists of its grid section crossed with ``models``; each is the Run field of its name
    budget: str  # the axis that is the run's own token budget (``stages.train --tokens``)
    table_budget: str  # the runs-table column, besides D, that holds the run's own tokens ("" for none)
    label: str  # how figures and tables name it
    marker: str  # its matplotlib marker in every figure
    moe: bool = False  # trains an MoE model
    variant: str = ""  # the config section its variant axis names entries of (moe, growth, expansion); "" for none
    continues: str = ""  # the trained kind whose checkpoint (its budget = this run's d1) it continues; "" for none
    surgery: str = ""  # the surgery between that checkpoint and this run ("" to continue it as it is)
    lr_policy: str = "train.lr_policy"  # where its lr policy is set: train.<key>, or <variant section>.lr_policy
    branches: bool = True  # under wsd, its budgets share one stable run (else every run is a family of its own)
    shape_seed: bool = False  # seeded from the model's shape alone (Grid.sweep_seed), not from its identity
    help: str = ""  # description of its grid section in the config schema

    @property
    def folder(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def budgets(self) -> tuple[str, ...]:
        """The token-budget axes of its grid section (checked as token counts)."""
        return tuple(a for a in self.axes if a in BUDGETS)

    @property
    def parent(self) -> str:
        """The record kind of the checkpoint its training starts from ("" for a fresh model)."""
        return self.surgery or self.continues

    @property
    def init(self) -> str:
        """Template of the checkpoint it starts from under the study root ("" for a fresh model)."""
        if self.surgery:
            return SURGERY_PATHS[self.surgery]
        return KINDS[self.continues].path if self.continues else ""

    def run_id(self, **fields: str) -> str:
        return self.path.format(**fields)


KINDS: dict[str, RunKind] = {
    kind.name: kind
    for kind in (
        RunKind(
            DENSE,
            path="dense/{model}/d1_{d1}",
            axes=("d1",),
            budget="d1",
            table_budget="D1",
            label="dense",
            marker="o",
        ),
        RunKind(
            SCRATCH_MOE,
            path="scratch/{model}/{moe}/d_{d}",
            axes=("moe", "d"),
            budget="d",
            table_budget="",
            label="MoE from scratch",
            marker="s",
            moe=True,
            variant="moe",
        ),
        RunKind(
            UPCYCLED,
            path="moe/{model}/d1_{d1}/{moe}/d2_{d2}",
            axes=("moe", "d1", "d2"),
            budget="d2",
            table_budget="D2",
            label="upcycled MoE",
            marker="^",
            moe=True,
            variant="moe",
            continues=DENSE,
            surgery=UPCYCLE,
            lr_policy="moe.lr_policy",
        ),
        RunKind(
            DENSE_CONT,
            path="dense_cont/{model}/d1_{d1}/d2_{d2}",
            axes=("d1", "d2"),
            budget="d2",
            table_budget="D2",
            label="dense continued",
            marker="D",
            continues=DENSE,
            lr_policy="train.dense_cont_lr_policy",
        ),
        RunKind(
            LR_SWEEP,
            path="lr_sweep/{model}/lr_{lr}/d_{d}",
            axes=("lr", "d"),
            budget="d",
            table_budget="D1",
            label="dense (lr sweep)",
            marker="x",
            branches=False,  # each learning rate is a family of its own, with (usually) one budget
            shape_seed=True,
            help="learning-rate sweeps: a fresh dense run per model x lr x d, trained with the study's train options "
            "and that peak lr (results/lr_sweep/<model>/lr_<lr>/d_<d>); the lr_sweep figure draws them",
        ),
        RunKind(
            GROWN,
            path="grown/{model}/d1_{d1}/{growth}/d2_{d2}",
            axes=("growth", "d1", "d2"),
            budget="d2",
            table_budget="D2",
            label="grown dense",
            marker="v",
            variant="growth",
            continues=DENSE,
            surgery=GROW,
            lr_policy="growth.lr_policy",
            help="warm-started runs: each model's dense checkpoint at d1 grown by each growth variant "
            "(results/grow/<model>/d1_<d1>/<growth>), then trained d2 tokens "
            "(results/grown/<model>/d1_<d1>/<growth>/d2_<d2>); their baseline, the target model from scratch, "
            "is a grid.dense run of the target",
        ),
        RunKind(
            EXPANDED,
            path="expanded/{model}/{moe}/d1_{d1}/{expansion}/d2_{d2}",
            axes=("moe", "d1", "expansion", "d2"),
            budget="d2",
            table_budget="D2",
            label="expanded MoE",
            marker="P",
            moe=True,
            variant="expansion",
            continues=SCRATCH_MOE,
            surgery=EXPAND,
            lr_policy="expansion.lr_policy",
            help="expert expansion: each model's MoE from scratch (grid.scratch_moe's run of that moe at d = d1) "
            "expanded by each expansion variant to factor x its experts, top-k fixed "
            "(results/expand/<model>/<moe>/d1_<d1>/<expansion>), then trained d2 tokens "
            "(results/expanded/<model>/<moe>/d1_<d1>/<expansion>/d2_<d2>); its baselines are grid.scratch_moe and "
            "grid.upcycled runs of the expanded shape",
        ),
    )
}
RECORD_KINDS = (*KINDS, UPCYCLE, GROW, EXPAND, IMPORT)  # every kind a run record may carry
# kinds that continue a trained checkpoint (a dense one, or an MoE from scratch for expanded) at their d1
CONTINUED = tuple(k.name for k in KINDS.values() if k.continues)


def folder_pattern(branching_only: bool = False) -> str:
    """A regex of run_ids by their kind's folder (the ``run`` and ``family`` wildcards of the rules)."""
    folders = [re.escape(k.folder) for k in KINDS.values() if k.branches or not branching_only]
    return f"({'|'.join(folders)})/.+"
