# Real text -> documents -> train/val split by whole documents -> byte-level BPE (or data.tokenizer: a parent's
# tokenizer) -> uint16 shards (uint32 when the vocabulary needs it).


rule data:
    input:
        data_files(),
        tokenizer_files(config),
    output:
        multiext(f"{RESULTS}/data/{{corpus}}/", "train.bin", "val.bin", "tokenizer.json", "manifest.json"),
    params:
        out=lambda w: f"{RESULTS}/data/{w.corpus}",
        # --sources and --files only when set; data.files as written (the stage expands folders and globs alike)
        texts=shlex.join(
            (["--sources", ",".join(config["data"]["sources"])] if config["data"]["sources"] else [])
            + (["--files", *config["data"]["files"]] if config["data"]["files"] else [])
        ),
        text_field=config["data"]["text_field"],
        vocab_size=corpus_vocab_size(config),
        tokenizer=shlex.join(["--tokenizer", config["parents"][config["data"]["tokenizer"]]["hf"]])
        if config["data"]["tokenizer"]
        else "",
        val_fraction=config["data"]["val_fraction"],
        code=code_hash("data"),
    log:
        f"{LOGS}/data/{{corpus}}.log",
    benchmark:
        f"{BENCHMARKS}/data/{{corpus}}.tsv"
    threads: 2
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.data --out {params.out} {params.texts} --text-field {params.text_field:q} "
        "--vocab-size {params.vocab_size} {params.tokenizer} --val-fraction {params.val_fraction} "
        "--threads {threads} > {log} 2>&1"
