# Scaling-law fits of the runs table: one results/fits/<name>.json per entry of config["fits"].


rule fit:
    input:
        RUNS_TABLE[0],
    output:
        f"{RESULTS}/fits/{{fit}}.json",
    params:
        spec=fit_spec,
        seed=config["seed"],
        code=code_hash("fit"),
    resources:
        **slurm("fit"),
    log:
        f"{LOGS}/fits/{{fit}}.log",
    wildcard_constraints:
        fit="|".join(ENABLED_FITS) or "(?!)",
    threads: 2
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.fit --table {input} --spec {params.spec:q} --seed {params.seed} --workers {threads} "
        "--out {output} > {log} 2>&1"
