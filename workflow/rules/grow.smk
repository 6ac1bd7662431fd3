# Growth (warm-starting): dense checkpoint at D1 -> a larger dense initialisation (one per growth variant, with
# the step-0 validation loss of the grown model next to the parent's in surgery.json), then the grown model
# trained for D2 tokens. Its baseline, the target model from scratch, is a plain dense run (grid.dense).


rule grow:
    input:
        corpus=DATA,
        parent=checkpoint_files(f"{RESULTS}/dense/{{model}}/d1_{{d1}}"),
    output:
        checkpoint_files(f"{RESULTS}/grow/{{model}}/d1_{{d1}}/{{growth}}", "surgery.json"),
    params:
        run_id=lambda w: f"grow/{w.model}/d1_{w.d1}/{w.growth}",
        out=lambda w: GRID.grow_dir(w.model, w.d1, w.growth),
        parent=lambda w: GRID.run("dense", w.model, d1=w.d1).directory,
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        model=lambda w: GRID.growth_model_json(w.growth),
        recipe=lambda w: GRID.growth_recipe_json(w.growth),
        labels=lambda w: GRID.labels_json(GRID.run("grown", w.model, d1=w.d1, growth=w.growth)),
        seed=lambda w: GRID.seed("grow", w.model, w.growth),
        eval_tokens=config["upcycle_eval_tokens"],
        code=code_hash("grow"),
    log:
        f"{LOGS}/grow/{{model}}/d1_{{d1}}/{{growth}}.log",
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.grow --parent {params.parent} --data {params.data} --eval-tokens {params.eval_tokens} "
        "--seed {params.seed} --model {params.model:q} --recipe {params.recipe:q} --run-id {params.run_id} "
        "--labels {params.labels:q} --threads {threads} --out {params.out} > {log} 2>&1"


rule grown:
    input:
        corpus=DATA,
        parent=checkpoint_files(f"{RESULTS}/grow/{{model}}/d1_{{d1}}/{{growth}}"),
        start=lambda w: GRID.start_state(GRID.run("grown", w.model, d1=w.d1, d2=w.d2, growth=w.growth)),
    output:
        checkpoint_files(f"{RESULTS}/grown/{{model}}/d1_{{d1}}/{{growth}}/d2_{{d2}}", "metrics.csv"),
    params:
        run_id=lambda w: GRID.run("grown", w.model, d1=w.d1, d2=w.d2, growth=w.growth).run_id,
        out=lambda w: GRID.run("grown", w.model, d1=w.d1, d2=w.d2, growth=w.growth).directory,
        init=lambda w: GRID.grow_dir(w.model, w.d1, w.growth),
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        train=lambda w: GRID.train_json(config["growth"][w.growth]["lr_policy"]),
        branch=lambda w, input: " ".join(f"--start-state {p}" for p in input.start),
        labels=lambda w: GRID.labels_json(GRID.run("grown", w.model, d1=w.d1, d2=w.d2, growth=w.growth)),
        seed=lambda w: GRID.seed("grown", w.model, w.growth),
        data_seed=lambda w: GRID.data_seed(w.model),
        code=code_hash("train"),
    resources:
        **TRAINING["grown"],
    log:
        f"{LOGS}/grown/{{model}}/d1_{{d1}}/{{growth}}/d2_{{d2}}.log",
    benchmark:
        f"{BENCHMARKS}/grown/{{model}}/d1_{{d1}}/{{growth}}/d2_{{d2}}.tsv"
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train --kind grown --run-id {params.run_id} --data {params.data} "
        "--tokens {wildcards.d2} --init {params.init} --train {params.train:q} --labels {params.labels:q} "
        "--seed {params.seed} --data-seed {params.data_seed} {params.branch} --threads {threads} "
        "--save-every {resources.save_every} --out {params.out} > {log} 2>&1"
