# Checkpoint surgery: dense checkpoint at D1 -> MoE initialisation (one per MoE variant), with the
# step-0 validation loss of the MoE next to the dense model's in surgery.json.


rule upcycle:
    input:
        DATA,
        checkpoint_files(f"{RESULTS}/dense/{{model}}/d1_{{d1}}"),
    output:
        checkpoint_files(f"{RESULTS}/upcycled/{{model}}/d1_{{d1}}/{{moe}}", "surgery.json"),
    params:
        recipe=lambda w: GRID.upcycle_args(w.moe),
        labels=lambda w: GRID.labels_json(Run("upcycled", w.model, w.moe, d1=w.d1)),
        seed=lambda w: GRID.seed("upcycle", w.model, w.moe),
        eval_tokens=config["upcycle_eval_tokens"],
        code=code_hash("upcycle"),
    log:
        "logs/upcycled/{model}/d1_{d1}/{moe}.log",
    threads: config["train"]["threads"]
    shell:
        "{PYTHON} -m stages.upcycle --dense {RESULTS}/dense/{wildcards.model}/d1_{wildcards.d1} "
        "--data {CORPUS} --eval-tokens {params.eval_tokens} --seed {params.seed} {params.recipe} "
        "--run-id upcycled/{wildcards.model}/d1_{wildcards.d1}/{wildcards.moe} --labels {params.labels:q} "
        "--threads {threads} --out {RESULTS}/upcycled/{wildcards.model}/d1_{wildcards.d1}/{wildcards.moe} "
        "> {log} 2>&1"
