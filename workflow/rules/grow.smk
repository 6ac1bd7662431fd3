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
        run_id=lambda w: GRID.init_id(wildcard_run("grown", w)),
        out=lambda w: GRID.init_dir(wildcard_run("grown", w)),
        parent=lambda w: GRID.parent_dir(wildcard_run("grown", w)),
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        model=lambda w: GRID.growth_model_json(w.growth),
        recipe=lambda w: GRID.growth_recipe_json(w.growth),
        labels=lambda w: GRID.labels_json(wildcard_run("grown", w)),
        seed=lambda w: GRID.seed("grow", w.model, w.growth),
        eval_tokens=config["upcycle_eval_tokens"],
        code=code_hash("grow"),
    resources:
        **slurm("grow"),
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
        unpack(lambda w: train_inputs("grown", w)),
    output:
        run_output("grown"),
    params:
        args=lambda w: train_args("grown", w),
        code=code_hash("train"),
    resources:
        **TRAINING["grown"],
    log:
        run_log("grown"),
    benchmark:
        run_benchmark("grown")
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train {params.args} --threads {threads} "
        "--save-every {resources.save_every} --dist-timeout {resources.dist_timeout} > {log} 2>&1"
