# Walltime parts: a training job estimated to outlast its rule's time limit (site.max_runtime, site.mfu or
# site.tokens_per_second; stages.workflow.walltime) is trained as a chain of jobs. Each part runs the job's own
# arguments up to a step and writes a part state (parts/<job id>/p_<step>.pt) that the next part, and finally the
# job's own rule, continue from: the products are the bytes of the job in one piece. One part rule per training
# rule, <rule>_part, with that rule's resources; a job that fits its limit has no parts.


for _rule in TRAINING_RULES:
    _template = "stable/{family}/b_{step}" if _rule == "stable" else next(
        k.path for k in KINDS.values() if k.folder == _rule
    )

    rule:
        name:
            f"{_rule}_part"
        input:
            unpack(lambda w, r=_rule: part_inputs(r, w)),
        output:
            f"{RESULTS}/parts/{_template}/p_{{part}}.pt",
        params:
            args=lambda w, r=_rule: GRID.part_args(part_job(r, w), w.part),
            code=code_hash("train"),
        resources:
            **TRAINING[_rule],
        log:
            f"{LOGS}/parts/{_template}/p_{{part}}.log",
        threads: config["train"]["threads"]
        conda:
            "../envs/stages.yaml"
        shell:
            "{resources.launch} python -m stages.train {params.args} --threads {threads} "
            "--save-every {resources.save_every} --dist-timeout {resources.dist_timeout} --state-out {output} "
            "> {log} 2>&1"
