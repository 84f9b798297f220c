#!/usr/bin/env bash
# The one command for the day a GPU is lent (issue 13): on a machine with a GPU and CuPy, in about 4 minutes on an
# H200, it runs
#   1. the environment: Python, NumPy, CuPy, the card;
#   2. every test case on the "cuda" device (pytest -k cuda);
#   3. tinyw2v2 check --device cuda (the gradient-check catalogue, float64 on the GPU);
#   4. a short pretraining on the GPU: the README's main job, which must learn like the CPU one (and, where mpi4py
#      and mpiexec are there, 100 steps of it on two ranks sharing the GPU);
#   5. benchmarks/bench_cuda.py: ours against transformers + torch on the same GPU, with launches and syncs;
# writing every log to one folder, and ends with a summary (exit 1 if a part failed).
#
#   benchmarks/gpu_check.sh [OUT]                  # default OUT: runs/gpu_check
#   DEVICE=emulated SCALE=4 STEPS=60 benchmarks/gpu_check.sh   # the script's own logic without a GPU (the emulated
#                                                  # device runs on NumPy; SCALE multiplies the time limits)
#
# The GPU machines have CuPy, torch and transformers but not soundfile or jiwer, and no internet: run
# benchmarks/gpu_wheels.sh here first, and carry its .whl folder (installed below into a private site folder).
# A fused kernel that fails to compile on a new card or CUDA can be switched off with TINYW2V2_FUSED=0.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tinyw2v2-site \
    .whl/*.whl > "$OUT/wheels.log" 2>&1 || echo "wheels: install failed (see $OUT/wheels.log)"
  export PYTHONPATH=/tmp/tinyw2v2-site:$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/tinyw2v2-site/bin:$PATH
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

failed=()
part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, print its last lines
  local name=$1 limit=$(( $2 * ${SCALE:-1} )) start rc
  shift 2
  local cmd="$*"
  echo "== $name: $(echo "$cmd" | tr '\n' ' ' | cut -c1-110)"
  start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then echo "   ok in $(( $(date +%s) - start )) s"; else
    echo "   FAILED (exit $rc) after $(( $(date +%s) - start )) s"; failed+=("$name"); fi
  tail -n "${TAIL:-4}" "$OUT/$name.log" | sed 's/^/   | /'
}

part environment 60 $PY -c "
import platform, numpy, tinyw2v2
from tinyw2v2 import backend
print('python', platform.python_version(), 'numpy', numpy.__version__, 'tinyw2v2', tinyw2v2.__version__)
if '$DEVICE'.startswith('cuda'):
    import cupy
    p = cupy.cuda.runtime.getDeviceProperties(0)
    print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), 'card', p['name'])
    assert backend.cuda_available(), 'CuPy is installed but no GPU answers'
"
part tests 150 $PY -m pytest -q -x -p no:cacheprovider -k "$DEVICE" tests
part check 90 $PY -m tinyw2v2 check --device "$DEVICE"
# the README's main job on the device, on the default corpus (generated here, about 15 s)
part pretrain 200 $PY -m tinyw2v2 pretrain --device "$DEVICE" --steps "${STEPS:-600}" --no-progress \
  --corpus-dir "$OUT/corpus" --out "$OUT/pretrain"
# ... and learns like the CPU one: the CPU run of the same command ends at held-out accuracy 0.44 (docs/results.md)
part learned 30 $PY -c "
import json, sys
last = [json.loads(l) for l in open('$OUT/pretrain/metrics.jsonl') if 'eval_accuracy' in l][-1]
print(f\"step {last['step']}: held-out eval accuracy {last['eval_accuracy']:.3f}, loss {last['eval_loss']:.3f}\")
sys.exit(0 if last['step'] < 600 or last['eval_accuracy'] >= 0.35 else 1)
"
# two ranks sharing the one GPU through MPI (docs/distributed.md), when mpi4py and an MPI are there
if $PY -c "from mpi4py import MPI" 2>/dev/null && command -v mpiexec >/dev/null; then
  part distributed 150 mpiexec -n 2 $PY -m tinyw2v2 pretrain --device "$DEVICE" --threads 1 --batch-seconds 12 \
    --steps "${DSTEPS:-100}" --no-progress --corpus-dir "$OUT/corpus" --out "$OUT/pretrain-2ranks"
fi
if [ "$DEVICE" = emulated ]; then BENCH="--only tiny-8x1s --repeat 1"; else BENCH="--repeat 10"; fi
part bench 200 $PY benchmarks/bench_cuda.py --device "$DEVICE" $BENCH --out "$OUT"

echo "== summary ($OUT)"
cat "$OUT/bench_cuda.md" 2>/dev/null
tail -n 1 "$OUT/learned.log" 2>/dev/null
if [ ${#failed[@]} -eq 0 ]; then echo "all parts passed"; else echo "failed: ${failed[*]}"; exit 1; fi
