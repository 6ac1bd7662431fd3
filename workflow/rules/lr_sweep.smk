# Learning-rate sweeps (grid.lr_sweep): a fresh dense run per model x peak lr x D, each one independent job with
# the study's train options and that lr. Seeds ignore lr and D (common random numbers, Grid.sweep_seed).


rule lr_sweep:
    input:
        unpack(lambda w: train_inputs("lr_sweep", w)),
    output:
        run_output("lr_sweep"),
    params:
        args=lambda w: train_args("lr_sweep", w),
        code=code_hash("train"),
    resources:
        **TRAINING["lr_sweep"],
    log:
        run_log("lr_sweep"),
    benchmark:
        run_benchmark("lr_sweep")
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train {params.args} --threads {threads} "
        "--save-every {resources.save_every} --dist-timeout {resources.dist_timeout} > {log} 2>&1"
