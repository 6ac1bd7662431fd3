# Paper figures (PNG + PDF, deterministic bytes), each a report entry with a caption, and the tables of fits.

ENABLED_FITS = [name for name, fit in config["fits"].items() if fit]
FIGURE_FILES = [f"{RESULTS}/figures/{name}.{ext}" for name in config["figures"] for ext in ("png", "pdf")]
TABLE_FILES = [f"{RESULTS}/fits/fit_params.{ext}" for ext in ("csv", "md")] if ENABLED_FITS else []
PLAN_FILES = [f"{RESULTS}/tables/plan.csv"] if config["planner"] else []


def figure_fits(w):
    """The fit files a figure draws (stages.config.FIGURE_FITS; "*" = every enabled fit)."""
    wanted = FIGURE_FITS[w.figure]
    names = ENABLED_FITS if "*" in wanted else [f for f in wanted if f in ENABLED_FITS]
    return [f"{RESULTS}/fits/{name}.json" for name in names]


rule figures:
    input:
        runs=RUNS_TABLE[0],
        fits=figure_fits,
    output:
        png=report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
    params:
        fits=lambda w, input: " ".join(f"--fit {f}" for f in input.fits),
        code=code_hash("figures"),
    log:
        "logs/figures/{figure}.log",
    wildcard_constraints:
        figure="|".join(config["figures"]) or "(?!)",
    shell:
        "{PYTHON} -m stages.figures {wildcards.figure} --runs {input.runs} {params.fits} "
        "--out {RESULTS}/figures/{wildcards.figure} > {log} 2>&1"


rule fit_table:
    input:
        [f"{RESULTS}/fits/{name}.json" for name in ENABLED_FITS],
    output:
        csv=report(f"{RESULTS}/fits/fit_params.csv", caption="../report/fit_table.rst", category="Tables"),
        md=f"{RESULTS}/fits/fit_params.md",
    params:
        code=code_hash("tables"),
    log:
        "logs/tables/fit_params.log",
    shell:
        "{PYTHON} -m stages.tables --fits {input} --out {RESULTS}/fits/fit_params > {log} 2>&1"


rule plan:
    input:
        [f"{RESULTS}/fits/{name}.json" for name in ENABLED_FITS],
    output:
        report(f"{RESULTS}/tables/plan.csv", caption="../report/plan.rst", category="Tables"),
    params:
        flags=GRID.planner_args() if config["planner"] else "",
        code=code_hash("planner"),
    log:
        "logs/tables/plan.log",
    shell:
        "{PYTHON} -m stages.planner --fits {RESULTS}/fits {params.flags} --out {output} > {log} 2>&1"
