# Validation CE of every run on the same held-out tokens, then one table of all runs.


rule evaluate:
    input:
        val=f"{CORPUS}/val.bin",
        manifest=f"{CORPUS}/manifest.json",
        checkpoint=checkpoint_files(f"{RESULTS}/{{run}}"),
    output:
        f"{RESULTS}/eval/{{run}}/eval.json",
    params:
        checkpoint=lambda w: f"{RESULTS}/{w.run}",
        max_tokens=config["evaluate"]["max_tokens"],
        batch_size=config["evaluate"]["batch_size"],
        code=code_hash("evaluate"),
    resources:
        **slurm("evaluate"),
    log:
        f"{LOGS}/eval/{{run}}.log",
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.evaluate --checkpoint {params.checkpoint} --tokens {input.val} "
        "--max-tokens {params.max_tokens} --batch-size {params.batch_size} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule collect:
    input:
        evals=[run.eval_json for run in GRID.runs],
        surgery=[f"{d}/surgery.json" for d in GRID.upcycle_inits()],
        grown=[f"{d}/surgery.json" for d in GRID.grow_inits()],
        expanded=[f"{d}/surgery.json" for d in GRID.expand_inits()],
    output:
        csv=RUNS_TABLE[0],
        parquet=RUNS_TABLE[1],
    params:
        code=code_hash("collect"),
    resources:
        **slurm("collect"),
    log:
        f"{LOGS}/collect.log",
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.collect --evals {input.evals} --out {output.csv} --parquet {output.parquet} > {log} 2>&1"
