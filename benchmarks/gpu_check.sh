#!/usr/bin/env bash
# The prepared GPU check: correctness on CUDA, engine vs plain loop, fused trials and the
# cifar10_lr_wd projection, in at most 5 minutes on one H200 (cold torch.compile included).
#
#   bash benchmarks/gpu_check.sh OUT_DIR              # on a CUDA machine
#   bash benchmarks/gpu_check.sh OUT_DIR --device cpu # rehearsal on the CPU at tiny sizes
#
# Writes OUT_DIR/gpu_check.json, gpu_check.md, gpu_check.log, cuda_tests.xml and parts/*.json;
# exits non-zero when a part failed (the other parts still run). Python packages the machine
# lacks travel as wheels in .whl/ (docs/benchmarks.md says which); they are installed into
# GPU_CHECK_SITE first. Environment:
#   PYTHON            interpreter (default python3)
#   GPU_CHECK_DEVICE  cuda (default) or cpu, as --device
#   GPU_CHECK_WHEELS  folder of wheels to install before the check (default .whl; skipped when absent)
#   GPU_CHECK_SITE    where they are installed and put first on PYTHONPATH (default /tmp/site)
set -u -o pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--device cpu|cuda]" >&2
    exit 2
fi
OUT_DIR=$1
shift
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/site}
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
started=$(date +%s)
echo "gpu_check: $(date -u +%FT%TZ) on $(hostname), $($PYTHON --version 2>&1)" | tee -a "$LOG"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE" | tee -a "$LOG"
    if ! $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$WHEELS"/*.whl 2>&1 | tee -a "$LOG"; then
        echo "gpu_check: installing the wheels failed; the check goes on with what is installed" | tee -a "$LOG"
    fi
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "set-up took $(( $(date +%s) - started )) s" | tee -a "$LOG"
PYTHONUNBUFFERED=1 $PYTHON -m benchmarks.gpu_check "$OUT_DIR" "$@" 2>&1
status=$?
echo "gpu_check: done in $(( $(date +%s) - started )) s, exit status $status" | tee -a "$LOG"
exit $status
