#!/usr/bin/env bash
# The one GPU check of the fast path (benchmarks/README.md), prepared to fit a short lease:
#   bash benchmarks/gpu_check.sh            # from the repository root, on one H100/H200
#   bash benchmarks/gpu_check.sh --smoke    # CPU, tiny sizes, no compile: checks the wiring
# Needs only python3 with torch, numpy, pyyaml, tqdm and pillow: cbdm runs from this checkout
# (PYTHONPATH, no pip install), snakemake and jsonschema are not needed. The features part also
# needs torch_fidelity, and times clean-fid itself where it is importable (else a stand-in of its
# pipeline): both are pure Python; where they are missing, carry their wheels in .whl/
#   pip download --no-deps -d .whl torch-fidelity==0.4.0 clean-fid==0.1.35   # here, then carry .whl
# and this script installs them from there (clean-fid's own needs, torchvision, scipy and requests,
# are on the GPU image, but its scipy is too new for clean-fid's FID: carry scipy 1.17.1 too,
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl scipy==1.17.1 ). Every part has a hard time cap (gpu_check.py), the whole
# check an 8-minute one. Figures, the log, loss.csv and loss.png go to $OUT (default gpu-check-out/).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
install() { python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/gpu-check-site "$@"; }
for module_wheel in torch_fidelity:torch_fidelity cleanfid:clean_fid; do
    module=${module_wheel%%:*} wheel=${module_wheel#*:}
    if ! python3 -c "import $module" 2>/dev/null && ls .whl/"$wheel"-*.whl >/dev/null 2>&1; then
        install .whl/"$wheel"-*.whl
    fi
done
# clean-fid's FID calls scipy.linalg.sqrtm(disp=False), which the image's scipy 1.18.1 refuses: a
# carried scipy wheel (requirements.lock's 1.17.1, cp312) goes ahead of the image's.
if ls .whl/scipy-*.whl >/dev/null 2>&1; then install .whl/scipy-*.whl; fi
[ -d /tmp/gpu-check-site ] && export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
started=$(date +%s)
limit=470
case " $* " in *" --smoke "*) limit=3600 ;; esac  # a busy CPU, not the GPU budget
timeout -k 10 $limit python3 benchmarks/gpu_check.py --out "$OUT" "$@"
status=$?
echo "gpu_check.sh: exit $status after $(( $(date +%s) - started )) s; figures in $OUT"
exit $status
