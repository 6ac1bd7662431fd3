# Scaling-law fits of the runs table: one results/fits/<name>.json per entry of config["fits"].


def fit_flags(w):
    """Command-line flags of stages.fit for config["fits"][name] (optional ones only when set)."""
    fit = config["fits"][w.fit]
    flags = [f"--law {fit['law']}", f"--bootstrap {fit['bootstrap']}", f"--grid {fit['grid']}"]
    if fit["map"]:
        flags.append("--map " + shlex.quote(",".join(f"{k}={v}" for k, v in sorted(fit["map"].items()))))
    for key in ("where", "holdout"):
        if fit[key]:
            flags.append(f"--{key} {shlex.quote(fit[key])}")
    return " ".join(flags)


rule fit:
    input:
        RUNS_TABLE[0],
    output:
        f"{RESULTS}/fits/{{fit}}.json",
    params:
        flags=fit_flags,
        seed=config["seed"],
        code=code_hash("fit"),
    log:
        "logs/fits/{fit}.log",
    wildcard_constraints:
        fit="|".join(name for name, fit in config["fits"].items() if fit) or "(?!)",
    threads: 2
    shell:
        "{PYTHON} -m stages.fit --table {input} {params.flags} --seed {params.seed} --workers {threads} "
        "--out {output} > {log} 2>&1"
