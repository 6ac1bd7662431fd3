# Dense pretraining over model sizes x D1, and the dense-continued baseline (D1 then D2 more tokens).


rule dense:
    input:
        DATA,
    output:
        checkpoint_files(f"{RESULTS}/dense/{{model}}/d1_{{d1}}", "metrics.csv"),
    params:
        model=lambda w: GRID.model_json(w.model),
        labels=lambda w: GRID.labels_json(Run("dense", w.model, d1=w.d1)),
        seed=lambda w: GRID.seed("dense", w.model),
        data_seed=GRID.data_seed(),
        train=GRID.train_args(),
        log_every=config["train"]["log_every"],
        code=code_hash("train"),
    log:
        "logs/dense/{model}/d1_{d1}.log",
    benchmark:
        "benchmarks/dense/{model}/d1_{d1}.tsv"
    threads: config["train"]["threads"]
    shell:
        "{PYTHON} -m stages.train --kind dense --run-id dense/{wildcards.model}/d1_{wildcards.d1} "
        "--data {CORPUS} --tokens {wildcards.d1} --model {params.model:q} --labels {params.labels:q} "
        "--seed {params.seed} --data-seed {params.data_seed} {params.train} --log-every {params.log_every} "
        "--threads {threads} --save-every {SAVE_EVERY} --out {RESULTS}/dense/{wildcards.model}/d1_{wildcards.d1} "
        "> {log} 2>&1"


rule dense_cont:
    input:
        DATA,
        checkpoint_files(f"{RESULTS}/dense/{{model}}/d1_{{d1}}"),
    output:
        checkpoint_files(f"{RESULTS}/dense_cont/{{model}}/d1_{{d1}}/d2_{{d2}}", "metrics.csv"),
    params:
        labels=lambda w: GRID.labels_json(Run("dense_cont", w.model, d1=w.d1, d2=w.d2)),
        seed=lambda w: GRID.seed("dense_cont", w.model),
        data_seed=GRID.data_seed(),
        train=GRID.train_args(config["train"]["dense_cont_lr_policy"]),
        log_every=config["train"]["log_every"],
        code=code_hash("train"),
    log:
        "logs/dense_cont/{model}/d1_{d1}/d2_{d2}.log",
    benchmark:
        "benchmarks/dense_cont/{model}/d1_{d1}/d2_{d2}.tsv"
    threads: config["train"]["threads"]
    shell:
        "{PYTHON} -m stages.train --kind dense_cont "
        "--run-id dense_cont/{wildcards.model}/d1_{wildcards.d1}/d2_{wildcards.d2} "
        "--data {CORPUS} --tokens {wildcards.d2} --init {RESULTS}/dense/{wildcards.model}/d1_{wildcards.d1} "
        "--labels {params.labels:q} --seed {params.seed} --data-seed {params.data_seed} {params.train} "
        "--log-every {params.log_every} --threads {threads} --save-every {SAVE_EVERY} "
        "--out {RESULTS}/dense_cont/{wildcards.model}/d1_{wildcards.d1}/d2_{wildcards.d2} > {log} 2>&1"
