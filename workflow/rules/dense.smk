# Dense pretraining over model sizes x D1, and the dense-continued baseline (D1 then D2 more tokens).
# Every training rule has one param, `args` (common.smk train_args -> Grid.train_args): the run's identity, data,
# starting model, option groups (one validated JSON each), labels and seeds, so any change to them reruns the job.
# `save_every`, `dist_timeout` and the job's placement (TRAINING: nodes, tasks, GPUs, the `launch` prefix) are resources, not
# params: they must not trigger reruns.


rule dense:
    input:
        unpack(lambda w: train_inputs("dense", w)),
    output:
        run_output("dense"),
    params:
        args=lambda w: train_args("dense", w),
        code=code_hash("train"),
    resources:
        **TRAINING["dense"],
    log:
        run_log("dense"),
    benchmark:
        run_benchmark("dense")
    # dense runs are the parents of upcycling chains: start them early (see rule stable)
    priority: 1
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train {params.args} --threads {threads} "
        "--save-every {resources.save_every} --dist-timeout {resources.dist_timeout} > {log} 2>&1"


rule dense_cont:
    input:
        unpack(lambda w: train_inputs("dense_cont", w)),
    output:
        run_output("dense_cont"),
    params:
        args=lambda w: train_args("dense_cont", w),
        code=code_hash("train"),
    resources:
        **TRAINING["dense_cont"],
    log:
        run_log("dense_cont"),
    benchmark:
        run_benchmark("dense_cont")
    threads: config["train"]["threads"]
    conda:
        "../envs/stages.yaml"
    shell:
        "{resources.launch} python -m stages.train {params.args} --threads {threads} "
        "--save-every {resources.save_every} --dist-timeout {resources.dist_timeout} > {log} 2>&1"
