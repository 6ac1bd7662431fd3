# Imported parents (config key `parents`): an existing Hugging Face dense model becomes the dense checkpoint
# results/dense/{model}/d1_{D1} that upcycling and dense continuation start from, D1 being its stated
# pre-training tokens. It is imported at the study's train.seq_len; the corpus is tokenized with its tokenizer
# (data.tokenizer), so the import's recorded tokenizer sha256 matches the corpus manifest.


rule import_parent:
    input:
        lambda w: parent_files(config, shape_name(w.model)),
    output:
        checkpoint_files(f"{RESULTS}/dense/{{model}}/d1_{{d1}}"),
    wildcard_constraints:
        model=GRID.parent_pattern(),
    params:
        args=lambda w: GRID.import_args(w.model),
        code=code_hash("export"),
    resources:
        **slurm("import_parent"),
    log:
        f"{LOGS}/dense/{{model}}/d1_{{d1}}.log",
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.export {params.args} > {log} 2>&1"


# a parent's dense checkpoint is imported, never trained (the dense rule would match its path too)
ruleorder: import_parent > dense
