# Real text -> documents -> train/val split by whole documents (exact duplicates removed, long documents cut) ->
# byte-level BPE (or data.tokenizer: a parent's tokenizer) -> uint16 shards (uint32 when the vocabulary needs it).
# Three steps: data_tokenizer (split plan + tokenizer on a bounded sample), data.shards data_shard jobs in parallel
# (disjoint document ranges), data (concatenates them in order, writes the manifest): the same bytes for any
# data.shards.

DATA_TEXTS = shlex.join(  # --sources and --files only when set; data.files as written (the stage expands them)
    (["--sources", ",".join(config["data"]["sources"])] if config["data"]["sources"] else [])
    + (["--files", *config["data"]["files"]] if config["data"]["files"] else [])
)
DATA_PARTS = f"{RESULTS}/data/{{corpus}}/parts"


rule data_tokenizer:
    input:
        data_files(),
        tokenizer_files(config),
    output:
        f"{RESULTS}/data/{{corpus}}/tokenizer.json",
        temp(multiext(f"{DATA_PARTS}/", "plan.json", "plan.npy")),
    params:
        out=lambda w: f"{RESULTS}/data/{w.corpus}",
        texts=DATA_TEXTS,
        text_field=config["data"]["text_field"],
        vocab_size=corpus_vocab_size(config),
        tokenizer=shlex.join(["--tokenizer", config["parents"][config["data"]["tokenizer"]]["hf"]])
        if config["data"]["tokenizer"]
        else "",
        val_fraction=config["data"]["val_fraction"],
        max_chars=config["data"]["max_document_chars"],
        code=code_hash("data"),
    resources:
        **slurm("data_tokenizer"),
    log:
        f"{LOGS}/data/{{corpus}}.tokenizer.log",
    benchmark:
        f"{BENCHMARKS}/data/{{corpus}}.tokenizer.tsv"
    threads: 2
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.data --step tokenizer --out {params.out} {params.texts} --text-field {params.text_field:q} "
        "--vocab-size {params.vocab_size} {params.tokenizer} --val-fraction {params.val_fraction} "
        "--max-document-chars {params.max_chars} --threads {threads} > {log} 2>&1"


rule data_shard:
    input:
        data_files(),
        f"{RESULTS}/data/{{corpus}}/tokenizer.json",
        multiext(f"{DATA_PARTS}/", "plan.json", "plan.npy"),
    output:
        temp(multiext(f"{DATA_PARTS}/{{shard}}.", "train.bin", "val.bin", "json")),
    wildcard_constraints:
        shard=r"[0-9]+",
    params:
        out=lambda w: f"{RESULTS}/data/{w.corpus}",
        texts=DATA_TEXTS,
        text_field=config["data"]["text_field"],
        shards=config["data"]["shards"],
        code=code_hash("data"),
    resources:
        **slurm("data_shard"),
    log:
        f"{LOGS}/data/{{corpus}}.shard{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/data/{{corpus}}.shard{{shard}}.tsv"
    threads: 1
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.data --step shard --shard {wildcards.shard} --shards {params.shards} --out {params.out} "
        "{params.texts} --text-field {params.text_field:q} --threads {threads} > {log} 2>&1"


rule data:
    input:
        f"{RESULTS}/data/{{corpus}}/tokenizer.json",
        multiext(f"{DATA_PARTS}/", "plan.json", "plan.npy"),
        expand(
            f"{DATA_PARTS}/{{shard}}.{{part}}",
            shard=range(config["data"]["shards"]),
            part=("train.bin", "val.bin", "json"),
            allow_missing=True,
        ),
    output:
        multiext(f"{RESULTS}/data/{{corpus}}/", "train.bin", "val.bin", "manifest.json"),
    params:
        out=lambda w: f"{RESULTS}/data/{w.corpus}",
        shards=config["data"]["shards"],
        code=code_hash("data"),
    resources:
        **slurm("data"),
    log:
        f"{LOGS}/data/{{corpus}}.log",
    benchmark:
        f"{BENCHMARKS}/data/{{corpus}}.tsv"
    threads: 1
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.data --step merge --shards {params.shards} --out {params.out} > {log} 2>&1"
