# Real text -> documents -> train/val split by whole documents -> byte-level BPE -> uint16 shards.


rule data:
    input:
        config["data"]["files"],
    output:
        multiext(f"{RESULTS}/data/{{corpus}}/", "train.bin", "val.bin", "tokenizer.json", "manifest.json"),
    params:
        out=lambda w: f"{RESULTS}/data/{w.corpus}",
        sources=",".join(config["data"]["sources"]),
        vocab_size=config["data"]["vocab_size"],
        val_fraction=config["data"]["val_fraction"],
        code=code_hash("data"),
    log:
        "logs/data/{corpus}.log",
    benchmark:
        "benchmarks/data/{corpus}.tsv"
    threads: 2
    conda:
        "../envs/stages.yaml"
    shell:
        "python -m stages.data --out {params.out} --sources {params.sources:q} --files {input:q} "
        "--vocab-size {params.vocab_size} --val-fraction {params.val_fraction} --threads {threads} > {log} 2>&1"
