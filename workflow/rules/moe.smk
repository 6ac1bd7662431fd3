# MoE training: the upcycled MoE for D2 tokens, and the MoE-from-scratch baseline for D tokens.


rule moe:
    input:
        corpus=DATA,
        parent=checkpoint_files(f"{RESULTS}/upcycled/{{model}}/d1_{{d1}}/{{moe}}"),
        start=lambda w: GRID.start_state(GRID.run("upcycled", w.model, w.moe, d1=w.d1, d2=w.d2)),
    output:
        checkpoint_files(f"{RESULTS}/moe/{{model}}/d1_{{d1}}/{{moe}}/d2_{{d2}}", "metrics.csv"),
    params:
        run_id=lambda w: GRID.run("upcycled", w.model, w.moe, d1=w.d1, d2=w.d2).run_id,
        out=lambda w: GRID.run("upcycled", w.model, w.moe, d1=w.d1, d2=w.d2).directory,
        init=lambda w: f"{RESULTS}/upcycled/{w.model}/d1_{w.d1}/{w.moe}",
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        train=lambda w: GRID.train_json(config["moe"][w.moe]["lr_policy"]),
        branch=lambda w, input: " ".join(f"--start-state {p}" for p in input.start),
        labels=lambda w: GRID.labels_json(GRID.run("upcycled", w.model, w.moe, d1=w.d1, d2=w.d2)),
        seed=lambda w: GRID.seed("upcycled", w.model, w.moe),
        data_seed=lambda w: GRID.data_seed(w.model),
        code=code_hash("train"),
    resources:
        **TRAINING["moe"],
    log:
        f"{LOGS}/moe/{{model}}/d1_{{d1}}/{{moe}}/d2_{{d2}}.log",
    benchmark:
        f"{BENCHMARKS}/moe/{{model}}/d1_{{d1}}/{{moe}}/d2_{{d2}}.tsv"
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train --kind upcycled --run-id {params.run_id} --data {params.data} "
        "--tokens {wildcards.d2} --init {params.init} --train {params.train:q} --labels {params.labels:q} "
        "--seed {params.seed} --data-seed {params.data_seed} {params.branch} --threads {threads} "
        "--save-every {resources.save_every} --out {params.out} > {log} 2>&1"


rule scratch:
    input:
        corpus=DATA,
        start=lambda w: GRID.start_state(GRID.run("scratch_moe", w.model, w.moe, d=w.d)),
    output:
        checkpoint_files(f"{RESULTS}/scratch/{{model}}/{{moe}}/d_{{d}}", "metrics.csv"),
    params:
        run_id=lambda w: GRID.run("scratch_moe", w.model, w.moe, d=w.d).run_id,
        out=lambda w: GRID.run("scratch_moe", w.model, w.moe, d=w.d).directory,
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        model=lambda w: GRID.model_json(w.model, w.moe),
        train=lambda w: GRID.train_json(GRID.lr_policy(GRID.run("scratch_moe", w.model, w.moe, d=w.d))),
        branch=lambda w, input: " ".join(f"--start-state {p}" for p in input.start),
        labels=lambda w: GRID.labels_json(GRID.run("scratch_moe", w.model, w.moe, d=w.d)),
        seed=lambda w: GRID.seed("scratch_moe", w.model, w.moe),
        data_seed=lambda w: GRID.data_seed(w.model),
        code=code_hash("train"),
    resources:
        **TRAINING["scratch"],
    log:
        f"{LOGS}/scratch/{{model}}/{{moe}}/d_{{d}}.log",
    benchmark:
        f"{BENCHMARKS}/scratch/{{model}}/{{moe}}/d_{{d}}.tsv"
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train --kind scratch_moe --run-id {params.run_id} --data {params.data} "
        "--tokens {wildcards.d} --model {params.model:q} --train {params.train:q} --labels {params.labels:q} "
        "--seed {params.seed} --data-seed {params.data_seed} {params.branch} --threads {threads} "
        "--save-every {resources.save_every} --out {params.out} > {log} 2>&1"


rule stable:
    # wsd: the stable phase of one run family, segment by segment; each budget's cooldown branches off the
    # state at its decay start, so a grid of k budgets trains one stable run plus k short cooldowns
    input:
        corpus=DATA,
        previous=lambda w: stable_previous(w),
        parent=lambda w: stable_parent(w),
    output:
        f"{RESULTS}/stable/{{family}}/b_{{step}}.pt",
    params:
        args=lambda w: GRID.segment_args(w.family, w.step),
        code=code_hash("train"),
    resources:
        **TRAINING["stable"],
    log:
        f"{LOGS}/stable/{{family}}/b_{{step}}.log",
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train {params.args} --threads {threads} "
        "--save-every {resources.save_every} --state-out {output} > {log} 2>&1"
