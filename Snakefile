"""Upcycling dense LMs into MoE, and the scaling laws that govern it: the whole study as one DAG.

    snakemake                                # default tiny CPU grid (config/config.yaml), all targets
    snakemake paper                          # fits, figures and tables from results/tables/runs.csv, no retraining
    snakemake --configfile config/tiny.yaml  # a smaller grid (overlays the default config)

Stages live in the `stages` package; rules only wire files to `python -m stages.X` calls.
"""

import os

from snakemake.utils import min_version

min_version("9.27")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/dense.smk"
include: "workflow/rules/lr_sweep.smk"
include: "workflow/rules/parents.smk"
include: "workflow/rules/upcycle.smk"
include: "workflow/rules/moe.smk"
include: "workflow/rules/grow.smk"
include: "workflow/rules/expand.smk"
include: "workflow/rules/parts.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/figures.smk"


report: "workflow/report/workflow.rst"


localrules:
    all,
    paper,
    collect,
    fit_table,
    plan,
    findings,


rule all:
    default_target: True
    input:
        RUNS_TABLE,
        FIT_FILES,
        FIGURE_FILES,
        TABLE_FILES,
        PLAN_FILES,
        FINDINGS_FILES,
        [f"{d}/surgery.json" for d in GRID.upcycle_inits()],
        [f"{d}/surgery.json" for d in GRID.grow_inits()],
        [f"{d}/surgery.json" for d in GRID.expand_inits()],


rule paper:
    input:
        FIT_FILES,
        FIGURE_FILES,
        TABLE_FILES,
        PLAN_FILES,
        FINDINGS_FILES,
