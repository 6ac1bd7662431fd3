# Paper figures (PNG + PDF, deterministic bytes), each a report entry with a caption.

FIGURES = {
    "loss_vs_d2": ["upcycled"],  # figure -> fits it draws (names in config["fits"])
    "loss_vs_compute": [],
}
FIGURE_FILES = [f"{RESULTS}/figures/{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")]


rule figures:
    input:
        runs=RUNS_TABLE[0],
        fits=lambda w: [f"{RESULTS}/fits/{f}.json" for f in FIGURES[w.figure] if config["fits"].get(f)],
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
        figure="|".join(FIGURES),
    shell:
        "{PYTHON} -m stages.figures {wildcards.figure} --runs {input.runs} {params.fits} "
        "--out {RESULTS}/figures/{wildcards.figure} > {log} 2>&1"
