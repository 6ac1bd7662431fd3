# Dense pretraining over model sizes x D1, and the dense-continued baseline (D1 then D2 more tokens).
# Every training job gets one validated JSON per option group (--model, --train); `save_every` and the job's
# placement (TRAINING: nodes, tasks, GPUs, the `launch` prefix) are resources, not params: they must not trigger reruns.


rule dense:
    input:
        corpus=DATA,
        start=lambda w: GRID.start_state(GRID.run("dense", w.model, d1=w.d1)),
    output:
        checkpoint_files(f"{RESULTS}/dense/{{model}}/d1_{{d1}}", "metrics.csv"),
    params:
        run_id=lambda w: GRID.run("dense", w.model, d1=w.d1).run_id,
        out=lambda w: GRID.run("dense", w.model, d1=w.d1).directory,
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        model=lambda w: GRID.model_json(w.model),
        train=lambda w: GRID.train_json(GRID.lr_policy(GRID.run("dense", w.model, d1=w.d1))),
        branch=lambda w, input: " ".join(f"--start-state {p}" for p in input.start),
        labels=lambda w: GRID.labels_json(GRID.run("dense", w.model, d1=w.d1)),
        seed=lambda w: GRID.seed("dense", w.model),
        data_seed=lambda w: GRID.data_seed(w.model),
        code=code_hash("train"),
    resources:
        **TRAINING["dense"],
    log:
        f"{LOGS}/dense/{{model}}/d1_{{d1}}.log",
    benchmark:
        f"{BENCHMARKS}/dense/{{model}}/d1_{{d1}}.tsv"
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train --kind dense --run-id {params.run_id} --data {params.data} "
        "--tokens {wildcards.d1} "
        "--model {params.model:q} --train {params.train:q} --labels {params.labels:q} --seed {params.seed} "
        "--data-seed {params.data_seed} {params.branch} --threads {threads} --save-every {resources.save_every} "
        "--out {params.out} > {log} 2>&1"


rule dense_cont:
    input:
        corpus=DATA,
        parent=checkpoint_files(f"{RESULTS}/dense/{{model}}/d1_{{d1}}"),
        start=lambda w: GRID.start_state(GRID.run("dense_cont", w.model, d1=w.d1, d2=w.d2)),
    output:
        checkpoint_files(f"{RESULTS}/dense_cont/{{model}}/d1_{{d1}}/d2_{{d2}}", "metrics.csv"),
    params:
        run_id=lambda w: GRID.run("dense_cont", w.model, d1=w.d1, d2=w.d2).run_id,
        out=lambda w: GRID.run("dense_cont", w.model, d1=w.d1, d2=w.d2).directory,
        init=lambda w: GRID.run("dense", w.model, d1=w.d1).directory,
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        train=GRID.train_json(config["train"]["dense_cont_lr_policy"]),
        branch=lambda w, input: " ".join(f"--start-state {p}" for p in input.start),
        labels=lambda w: GRID.labels_json(GRID.run("dense_cont", w.model, d1=w.d1, d2=w.d2)),
        seed=lambda w: GRID.seed("dense_cont", w.model),
        data_seed=lambda w: GRID.data_seed(w.model),
        code=code_hash("train"),
    resources:
        **TRAINING["dense_cont"],
    log:
        f"{LOGS}/dense_cont/{{model}}/d1_{{d1}}/d2_{{d2}}.log",
    benchmark:
        f"{BENCHMARKS}/dense_cont/{{model}}/d1_{{d1}}/d2_{{d2}}.tsv"
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train --kind dense_cont --run-id {params.run_id} --data {params.data} "
        "--tokens {wildcards.d2} --init {params.init} --train {params.train:q} --labels {params.labels:q} "
        "--seed {params.seed} --data-seed {params.data_seed} {params.branch} --threads {threads} "
        "--save-every {resources.save_every} --out {params.out} > {log} 2>&1"
