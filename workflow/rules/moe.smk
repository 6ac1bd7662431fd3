# MoE training: the upcycled MoE for D2 tokens, and the MoE-from-scratch baseline for D tokens.


rule moe:
    input:
        DATA,
        checkpoint_files(f"{RESULTS}/upcycled/{{model}}/d1_{{d1}}/{{moe}}"),
    output:
        checkpoint_files(f"{RESULTS}/moe/{{model}}/d1_{{d1}}/{{moe}}/d2_{{d2}}", "metrics.csv"),
    params:
        labels=lambda w: GRID.labels_json(Run("upcycled", w.model, w.moe, d1=w.d1, d2=w.d2)),
        seed=lambda w: GRID.seed("upcycled", w.model, w.moe),
        data_seed=GRID.data_seed(),
        train=lambda w: GRID.train_args(config["moe"][w.moe]["lr_policy"]),
        log_every=config["train"]["log_every"],
        code=code_hash("train"),
    log:
        "logs/moe/{model}/d1_{d1}/{moe}/d2_{d2}.log",
    benchmark:
        "benchmarks/moe/{model}/d1_{d1}/{moe}/d2_{d2}.tsv"
    threads: config["train"]["threads"]
    shell:
        "{PYTHON} -m stages.train --kind upcycled "
        "--run-id moe/{wildcards.model}/d1_{wildcards.d1}/{wildcards.moe}/d2_{wildcards.d2} "
        "--data {CORPUS} --tokens {wildcards.d2} "
        "--init {RESULTS}/upcycled/{wildcards.model}/d1_{wildcards.d1}/{wildcards.moe} "
        "--labels {params.labels:q} --seed {params.seed} --data-seed {params.data_seed} {params.train} "
        "--log-every {params.log_every} --threads {threads} --save-every {SAVE_EVERY} "
        "--out {RESULTS}/moe/{wildcards.model}/d1_{wildcards.d1}/{wildcards.moe}/d2_{wildcards.d2} > {log} 2>&1"


rule scratch:
    input:
        DATA,
    output:
        checkpoint_files(f"{RESULTS}/scratch/{{model}}/{{moe}}/d_{{d}}", "metrics.csv"),
    params:
        model=lambda w: GRID.model_json(w.model, w.moe),
        labels=lambda w: GRID.labels_json(Run("scratch_moe", w.model, w.moe, d=w.d)),
        seed=lambda w: GRID.seed("scratch_moe", w.model, w.moe),
        data_seed=GRID.data_seed(),
        train=GRID.train_args(),
        log_every=config["train"]["log_every"],
        code=code_hash("train"),
    log:
        "logs/scratch/{model}/{moe}/d_{d}.log",
    benchmark:
        "benchmarks/scratch/{model}/{moe}/d_{d}.tsv"
    threads: config["train"]["threads"]
    shell:
        "{PYTHON} -m stages.train --kind scratch_moe --run-id scratch/{wildcards.model}/{wildcards.moe}/d_{wildcards.d} "
        "--data {CORPUS} --tokens {wildcards.d} --model {params.model:q} --labels {params.labels:q} "
        "--seed {params.seed} --data-seed {params.data_seed} {params.train} --log-every {params.log_every} "
        "--threads {threads} --save-every {SAVE_EVERY} "
        "--out {RESULTS}/scratch/{wildcards.model}/{wildcards.moe}/d_{wildcards.d} > {log} 2>&1"
