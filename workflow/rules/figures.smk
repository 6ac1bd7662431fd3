# Paper figures (PNG + PDF, deterministic bytes), each a report entry with a caption, and the tables of fits.
# A figure's inputs are what stages.report.figure_specs declares it draws: the runs table, its fits, and (for
# training_curves) the metrics.csv of every run of the grid.


rule figures:
    input:
        runs=RUNS_TABLE[0],
        fits=figure_fit_files,
        metrics=figure_metrics,
    output:
        png=report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
    params:
        fits=lambda w, input: " ".join(f"--fit {f}" for f in input.fits),
        prefix=lambda w: f"{RESULTS}/figures/{w.figure}",
        metrics=lambda w, input: f"--metrics {RESULTS}" if input.metrics else "",
        code=code_hash("figures"),
    resources:
        **slurm("figures"),
    log:
        f"{LOGS}/figures/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(config["figures"]) or "(?!)",
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.figures {wildcards.figure} --runs {input.runs} {params.fits} {params.metrics} "
        "--out {params.prefix} > {log} 2>&1"


rule fit_table:
    input:
        FIT_FILES,
    output:
        csv=report(f"{RESULTS}/fits/fit_params.csv", caption="../report/fit_table.rst", category="Tables"),
        md=f"{RESULTS}/fits/fit_params.md",
    params:
        prefix=lambda w, output: output.csv.removesuffix(".csv"),
        code=code_hash("tables"),
    resources:
        **slurm("fit_table"),
    log:
        f"{LOGS}/tables/fit_params.log",
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.tables --fits {input} --out {params.prefix} > {log} 2>&1"


rule plan:
    input:
        FIT_FILES,
    output:
        report(f"{RESULTS}/tables/plan.csv", caption="../report/plan.rst", category="Tables"),
    params:
        fits=lambda w, input: os.path.dirname(input[0]),
        flags=GRID.planner_args() if config["planner"] else "",
        code=code_hash("planner"),
    resources:
        **slurm("plan"),
    log:
        f"{LOGS}/tables/plan.log",
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.planner --fits {params.fits} {params.flags} --out {output} > {log} 2>&1"


rule findings:
    input:
        runs=RUNS_TABLE[0],
        fits=FIT_FILES,
    output:
        csv=report(f"{RESULTS}/tables/findings.csv", caption="../report/findings.rst", category="Tables"),
        md=f"{RESULTS}/tables/findings.md",
    params:
        fits=lambda w, output: os.path.join(os.path.dirname(os.path.dirname(output.csv)), "fits"),
        roles=GRID.findings_args(),
        prefix=lambda w, output: output.csv.removesuffix(".csv"),
        code=code_hash("findings"),
    resources:
        **slurm("findings"),
    log:
        f"{LOGS}/tables/findings.log",
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.findings --runs {input.runs} --fits {params.fits} {params.roles} --out {params.prefix} "
        "> {log} 2>&1"
