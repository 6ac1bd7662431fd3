# Checkpoint surgery: dense checkpoint at D1 -> MoE initialisation (one per MoE variant), with the
# step-0 validation loss of the MoE next to the dense model's in surgery.json.


rule upcycle:
    input:
        corpus=DATA,
        dense=checkpoint_files(f"{RESULTS}/dense/{{model}}/d1_{{d1}}"),
    output:
        checkpoint_files(f"{RESULTS}/upcycled/{{model}}/d1_{{d1}}/{{moe}}", "surgery.json"),
    params:
        run_id=lambda w: GRID.init_id(wildcard_run("upcycled", w)),
        out=lambda w: GRID.init_dir(wildcard_run("upcycled", w)),
        dense=lambda w: GRID.parent_dir(wildcard_run("upcycled", w)),
        data=lambda w, input: os.path.dirname(input.corpus[0]),
        moe=lambda w: GRID.moe_json(w.moe),
        recipe=lambda w: GRID.recipe_json(w.moe),
        labels=lambda w: GRID.labels_json(wildcard_run("upcycled", w)),
        seed=lambda w: GRID.seed("upcycle", w.model, w.moe),
        eval_tokens=config["upcycle_eval_tokens"],
        code=code_hash("upcycle"),
    resources:
        **slurm("upcycle"),
    log:
        f"{LOGS}/upcycled/{{model}}/d1_{{d1}}/{{moe}}.log",
    # the start of an upcycled chain (see rule stable)
    priority: 1
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.upcycle --dense {params.dense} --data {params.data} --eval-tokens {params.eval_tokens} "
        "--seed {params.seed} --moe {params.moe:q} --recipe {params.recipe:q} --run-id {params.run_id} "
        "--labels {params.labels:q} --threads {threads} --out {params.out} > {log} 2>&1"
