# MoE training: the upcycled MoE for D2 tokens, and the MoE-from-scratch baseline for D tokens. A training rule's
# one param is its job's arguments (common.smk train_args); the `stable` rule trains the wsd stable runs they share.


rule moe:
    input:
        unpack(lambda w: train_inputs("upcycled", w)),
    output:
        run_output("upcycled"),
    params:
        args=lambda w: train_args("upcycled", w),
        code=code_hash("train"),
    resources:
        **TRAINING["moe"],
    log:
        run_log("upcycled"),
    benchmark:
        run_benchmark("upcycled")
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train {params.args} --threads {threads} "
        "--save-every {resources.save_every} --dist-timeout {resources.dist_timeout} > {log} 2>&1"


rule scratch:
    input:
        unpack(lambda w: train_inputs("scratch_moe", w)),
    output:
        run_output("scratch_moe"),
    params:
        args=lambda w: train_args("scratch_moe", w),
        code=code_hash("train"),
    resources:
        **TRAINING["scratch"],
    log:
        run_log("scratch_moe"),
    benchmark:
        run_benchmark("scratch_moe")
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train {params.args} --threads {threads} "
        "--save-every {resources.save_every} --dist-timeout {resources.dist_timeout} > {log} 2>&1"


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
    # the long sequential chains first (segment after segment): the short cooldowns and evaluations fill the
    # cores at the end instead of one core training the last chain alone
    priority: 1
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train {params.args} --threads {threads} "
        "--save-every {resources.save_every} --dist-timeout {resources.dist_timeout} --state-out {output} > {log} 2>&1"
