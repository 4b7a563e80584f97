#!/usr/bin/env bash
# How the fast training step's MFU grows with the batch (benchmarks/README.md, "MFU against batch
# size"): the CBDM step of bench_train.py at 4x and 8x the paper batch, then the DDPM step at its own
# batch (64), each with a hard cap, so the whole script ends within 8 minutes on one H100/H200:
#   bash benchmarks/gpu_scaling.sh            # from the repository root, on the GPU machine
#   bash benchmarks/gpu_scaling.sh --smoke    # CPU, CI size, no compile: checks the wiring
# Needs python3 with torch, numpy, pyyaml and tqdm; cbdm runs from this checkout (PYTHONPATH).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-scaling-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
smoke=() smoke_cap=
case " $* " in  # --smoke: a busy CPU, not the GPU budget, so each part may take 10 minutes
    *" --smoke "*) smoke=(--size ci --device cpu --no-compile --batch 8 --blocks 2 --calls 2 --threads 1) smoke_cap=600 ;;
esac
run() {  # name cap arguments...
    local name=$1 cap=$2; shift 2
    echo "=== $name (cap $cap s): bench_train.py $*" | tee -a "$OUT/gpu_scaling.log"
    timeout -k 5 "${smoke_cap:-$cap}" python3 benchmarks/bench_train.py "$@" "${smoke[@]}" --json "$OUT/$name.json" \
        2>&1 | tee -a "$OUT/gpu_scaling.log"
    echo "=== $name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/gpu_scaling.log"
}
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" \
    | tee "$OUT/gpu_scaling.log"
run cbdm_b192 150 --variant cbdm --batch 192 --blocks 4 --calls 10 --budget 15
run cbdm_b384 160 --variant cbdm --batch 384 --blocks 4 --calls 10 --budget 20
run ddpm_b64 140 --variant ddpm --blocks 4 --calls 10 --budget 10
