# Learning-rate sweeps (grid.lr_sweep): a fresh dense run per model x peak lr x D, each one independent job with
# the study's train options and that lr. Seeds ignore lr and D (common random numbers, Grid.sweep_seed).


rule lr_sweep:
    input:
        corpus=DATA,
    output:
        checkpoint_files(f"{RESULTS}/lr_sweep/{{model}}/lr_{{lr}}/d_{{d}}", "metrics.csv"),
    params:
        run_id=lambda w: GRID.run("lr_sweep", w.model, d=w.d, lr=w.lr).run_id,
        out=lambda w: GRID.run("lr_sweep", w.model, d=w.d, lr=w.lr).directory,
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        model=lambda w: GRID.model_json(w.model),
        train=lambda w: GRID.sweep_train_json(GRID.run("lr_sweep", w.model, d=w.d, lr=w.lr)),
        labels=lambda w: GRID.labels_json(GRID.run("lr_sweep", w.model, d=w.d, lr=w.lr)),
        seed=lambda w: GRID.sweep_seed(w.model),
        data_seed=lambda w: GRID.data_seed(w.model),
        code=code_hash("train"),
    resources:
        **TRAINING["lr_sweep"],
    log:
        f"{LOGS}/lr_sweep/{{model}}/lr_{{lr}}/d_{{d}}.log",
    benchmark:
        f"{BENCHMARKS}/lr_sweep/{{model}}/lr_{{lr}}/d_{{d}}.tsv"
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train --kind lr_sweep --run-id {params.run_id} --data {params.data} "
        "--tokens {wildcards.d} "
        "--model {params.model:q} --train {params.train:q} --labels {params.labels:q} --seed {params.seed} "
        "--data-seed {params.data_seed} --threads {threads} --save-every {resources.save_every} "
        "--out {params.out} > {log} 2>&1"
