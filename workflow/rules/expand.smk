# Expert expansion: an MoE from scratch at D1 -> an MoE with factor x its experts, top-k fixed (one per expansion
# variant, with the step-0 validation loss and the routing next to the parent's in surgery.json), then the
# expanded MoE trained for D2 tokens. Its baselines are MoEs of the expanded shape from scratch and upcycled.


rule expand_moe:
    input:
        corpus=DATA,
        parent=checkpoint_files(f"{RESULTS}/scratch/{{model}}/{{moe}}/d_{{d1}}"),
    output:
        checkpoint_files(f"{RESULTS}/expand/{{model}}/{{moe}}/d1_{{d1}}/{{expansion}}", "surgery.json"),
    params:
        run_id=lambda w: GRID.init_id(wildcard_run("expanded", w)),
        out=lambda w: GRID.init_dir(wildcard_run("expanded", w)),
        parent=lambda w: GRID.parent_dir(wildcard_run("expanded", w)),
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        recipe=lambda w: GRID.expansion_recipe_json(w.expansion),
        labels=lambda w: GRID.labels_json(wildcard_run("expanded", w)),
        seed=lambda w: GRID.seed("expand", w.model, f"{w.moe}/{w.expansion}"),
        eval_tokens=config["upcycle_eval_tokens"],
        code=code_hash("expand"),
    resources:
        **slurm("expand_moe"),
    log:
        f"{LOGS}/expand/{{model}}/{{moe}}/d1_{{d1}}/{{expansion}}.log",
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.expand --parent {params.parent} --data {params.data} --eval-tokens {params.eval_tokens} "
        "--seed {params.seed} --recipe {params.recipe:q} --run-id {params.run_id} --labels {params.labels:q} "
        "--threads {threads} --out {params.out} > {log} 2>&1"


rule expanded:
    input:
        unpack(lambda w: train_inputs("expanded", w)),
    output:
        run_output("expanded"),
    params:
        args=lambda w: train_args("expanded", w),
        code=code_hash("train"),
    resources:
        **TRAINING["expanded"],
    log:
        run_log("expanded"),
    benchmark:
        run_benchmark("expanded")
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train {params.args} --threads {threads} "
        "--save-every {resources.save_every} --dist-timeout {resources.dist_timeout} > {log} 2>&1"
