#!/usr/bin/env bash
# The one command for the day a GPU is lent (issue 13). On a machine with a GPU and CuPy it runs, each part with a
# time limit and its own log:
#   wheels       installs .whl/ (benchmarks/gpu_wheels.sh) offline into a private prefix, if the folder is there;
#   environment  Python, NumPy, CuPy, CUDA, the card, torch, the optional packages;
#   tests        every test case on the "cuda" device (pytest -k cuda; --maxfail=25, not -x);
#   check        tinyw2v2 check --device cuda (the gradient-check catalogue, float64 on the GPU);
#   pretrain     the README's main job on the GPU (900 steps, the default corpus, generated here) ...
#   learned      ... which must learn like the CPU one (held-out accuracy >= 0.35 at 900 steps; CPU: 0.43);
#   distributed  where mpi4py and mpiexec are there: DSTEPS (40) steps of it on two ranks sharing the GPU;
#   bench        benchmarks/bench_cuda.py: ours against transformers + torch on the same GPU, with launches and syncs;
# then a summary (exit 1 if a part failed). The limits add up to 490 s (the device tool allows 600 s a command) and
# BUDGET (540 s) caps the whole: a part that would end past it gets only the time left.
#
#   benchmarks/gpu_check.sh [LOGS]            # default LOGS: runs/gpu_check
#
# Where $OUT is set (the device tool sets it on the GPU machine; only files under it come back, at most 8, flat),
# the logs are packed into $OUT after every part: gpu_check.tar.gz (every log, the pytest junit XML, the bench table
# and JSON, both runs' metrics and plots; not the corpus or the checkpoints), and flat copies of summary.txt,
# bench_cuda.md, bench_cuda.json and pretrain_metrics.jsonl; at the end cupy_kernel_cache.tar.gz, CuPy's compiled
# kernels (CUPY_CACHE_DIR, default runs/cupy_kernel_cache): unpacked into runs/ and carried next time, they spare
# the next run the compiling. docs/performance.md ("The GPU check") has the device tool's call.
#
# Knobs (environment): DEVICE=cuda|cuda:N|emulated; PYTHON (python3); STEPS (900), DSTEPS (40); SKIP="tests
# distributed ..." (parts left out); PRETRAIN_ARGS (more pretrain options, appended: later ones win); BENCH_ARGS;
# CORPUS (default LOGS/corpus); WHEELS (.whl); SCALE (multiplies every limit); BUDGET (540 x SCALE s); TAIL (4 log
# lines shown).
# DEVICE=emulated runs the script's own logic without a GPU (tests/test_gpu_check.py does, with small settings).
# A fused kernel that fails to compile on a new card or CUDA can be switched off with TINYW2V2_FUSED=0.
set -u -o pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
STEPS=${STEPS:-900}
DSTEPS=${DSTEPS:-40}
SCALE=${SCALE:-1}
BUDGET=${BUDGET:-$(( 540 * SCALE ))}
SKIP=" ${SKIP:-} "
CORPUS=${CORPUS:-$LOGS/corpus}
PACK=${OUT:-}
WHEELS=${WHEELS:-.whl}
if [ "$DEVICE" = emulated ]; then BENCH_ARGS=${BENCH_ARGS:---only tiny-8x1s --repeat 1}; else
  BENCH_ARGS=${BENCH_ARGS:---repeat 10}; fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-$PWD/runs/cupy_kernel_cache}
mkdir -p "$LOGS"
rm -rf "$LOGS"/*.log "$LOGS"/summary.txt "$LOGS"/tests.xml "$LOGS"/bench_cuda.* "$LOGS/pretrain" "$LOGS/pretrain-2ranks"
T0=$(date +%s)

say() { echo "$*" | tee -a "$LOGS/summary.txt"; }

pack() {  # copy what should come back into $OUT (flat, at most 8 files)
  [ -n "$PACK" ] || return 0
  mkdir -p "$PACK"
  tar -czf "$PACK/gpu_check.tar.gz" --exclude=corpus --exclude='*.npz' -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
  for f in summary.txt bench_cuda.md bench_cuda.json; do [ -f "$LOGS/$f" ] && cp "$LOGS/$f" "$PACK/$f"; done
  [ -f "$LOGS/pretrain/metrics.jsonl" ] && cp "$LOGS/pretrain/metrics.jsonl" "$PACK/pretrain_metrics.jsonl"
  return 0
}

failed=()
part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to LOGS/NAME.log, print its last lines
  local name=$1 limit=$(( $2 * SCALE )) start rc left
  shift 2
  if [[ "$SKIP" == *" $name "* ]]; then say "== $name: skipped (SKIP)"; return 0; fi
  left=$(( BUDGET - ($(date +%s) - T0) ))
  if [ "$left" -lt 5 ]; then say "== $name: not run, the budget of $BUDGET s is spent"; failed+=("$name"); return 1; fi
  [ "$left" -lt "$limit" ] && limit=$left
  say "== $name (limit $limit s): $(echo "$*" | tr '\n' ' ' | cut -c1-150)"
  start=$(date +%s)
  timeout -s INT -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1   # SIGINT: pytest and Python print where they were
  rc=$?
  if [ $rc -eq 0 ]; then say "   ok in $(( $(date +%s) - start )) s"; else
    [ $rc -eq 124 ] || [ $rc -eq 130 ] || [ $rc -eq 137 ] && rc="$rc: time limit"
    say "   FAILED (exit $rc) after $(( $(date +%s) - start )) s"; failed+=("$name"); fi
  tail -n "${TAIL:-4}" "$LOGS/$name.log" | sed 's/^/   | /' | tee -a "$LOGS/summary.txt"
  pack
  [ "${rc%%:*}" = 0 ]
}

say "gpu_check on $DEVICE, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
SITE=/tmp/tinyw2v2-site
if [[ "$SKIP" == *" wheels "* ]]; then
  say "== wheels: skipped (SKIP)"
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
elif ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  rm -rf "$SITE"
  # --prefix, not --target: the mpich wheel's lib/ (libmpi) and bin/ (mpiexec) land there too
  part wheels 30 $PY -m pip install --no-index --no-deps --no-compile --no-cache-dir --ignore-installed \
    --disable-pip-version-check --prefix "$SITE" "$WHEELS"/*.whl
  SP=$(find "$SITE" -maxdepth 5 -type d \( -name site-packages -o -name dist-packages \) 2>/dev/null | head -n 1)
  export PYTHONPATH=${SP:+$SP:}$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=$SITE/bin:$PATH
  [ -f "$SITE/lib/libmpi.so.12" ] && export MPI4PY_LIBMPI=$SITE/lib/libmpi.so.12
else
  say "== wheels: none in $WHEELS/ (benchmarks/gpu_wheels.sh puts them in .whl/); using what is installed"
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

part environment 30 $PY -c "
import importlib, platform, numpy, tinyw2v2
from tinyw2v2 import backend
print('python', platform.python_version(), 'numpy', numpy.__version__, 'tinyw2v2', tinyw2v2.__version__)
for name in ('scipy', 'soundfile', 'jiwer', 'torch', 'transformers', 'mpi4py', 'pytest'):
    try:
        print(name, getattr(importlib.import_module(name), '__version__', '?'))
    except Exception as e:
        print(name, 'missing:', e)
if '$DEVICE'.startswith('cuda'):
    import cupy, torch
    p = cupy.cuda.runtime.getDeviceProperties(0)
    print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), 'driver',
          cupy.cuda.runtime.driverGetVersion(), 'card', p['name'], 'torch cuda', torch.cuda.is_available())
    assert backend.cuda_available(), 'CuPy is installed but no GPU answers'
"
part tests 140 $PY -m pytest -q -p no:cacheprovider --maxfail=25 --continue-on-collection-errors -rfE \
  --durations=15 -o faulthandler_timeout=60 --junitxml="$LOGS/tests.xml" -k "${DEVICE%%:*} and not cuda_sources" tests
[ -f "$LOGS/tests.log" ] && grep -E "^(FAILED|ERROR) " "$LOGS/tests.log" | head -n 25 | cut -c1-200 | sed 's/^/   | /' \
  | tee -a "$LOGS/summary.txt"
part check 40 $PY -m tinyw2v2 check --device "$DEVICE"
# the README's main job on the device, on the default corpus (generated into CORPUS first)
part pretrain 100 $PY -m tinyw2v2 pretrain --device "$DEVICE" --steps "$STEPS" --no-progress --corpus-dir "$CORPUS" \
  --out "$LOGS/pretrain" ${PRETRAIN_ARGS:-}
# ... ran to the end, and (the full 900 steps) learns like the CPU run of the same command: 0.43 (docs/results.md)
part learned 10 $PY -c "
import json, sys
evals = [json.loads(l) for l in open('$LOGS/pretrain/metrics.jsonl') if 'eval_accuracy' in l]
last = evals[-1]
print(f\"step {last['step']} of $STEPS: held-out accuracy {last['eval_accuracy']:.3f}, loss {last['eval_loss']:.3f}\")
sys.exit(0 if last['step'] == $STEPS and ($STEPS < 900 or last['eval_accuracy'] >= 0.35) else 1)
"
# two ranks sharing the one GPU through MPI (docs/distributed.md), when mpi4py and an MPI are there
if [[ "$SKIP" == *" distributed "* ]]; then
  say "== distributed: skipped (SKIP)"
elif $PY -c "from mpi4py import MPI" >/dev/null 2>&1 && command -v mpiexec >/dev/null; then
  part distributed 50 mpiexec -n 2 $PY -m tinyw2v2 pretrain --device "$DEVICE" --threads 1 --batch-seconds 12 \
    --steps "$DSTEPS" --no-progress --corpus-dir "$CORPUS" --out "$LOGS/pretrain-2ranks" ${PRETRAIN_ARGS:-}
else
  say "== distributed: not run (no mpi4py with an MPI library, or no mpiexec)"
fi
part bench 90 $PY benchmarks/bench_cuda.py --device "$DEVICE" $BENCH_ARGS --out "$LOGS"

say "== summary ($LOGS, $(( $(date +%s) - T0 )) s)"
[ -f "$LOGS/bench_cuda.md" ] && tee -a "$LOGS/summary.txt" < "$LOGS/bench_cuda.md"
[ -f "$LOGS/learned.log" ] && tail -n 1 "$LOGS/learned.log" | tee -a "$LOGS/summary.txt"
if [ ${#failed[@]} -eq 0 ]; then say "all parts passed"; else say "failed: ${failed[*]}"; fi
pack
if [ -n "$PACK" ] && [ -d "$CUPY_CACHE_DIR" ]; then   # CuPy's compiled kernels, to carry next time
  tar -czf "$PACK/cupy_kernel_cache.tar.gz" -C "$(dirname "$CUPY_CACHE_DIR")" "$(basename "$CUPY_CACHE_DIR")"
  if [ "$(stat -c %s "$PACK/cupy_kernel_cache.tar.gz")" -gt 15000000 ]; then
    rm -f "$PACK/cupy_kernel_cache.tar.gz"; echo "(the kernel cache is over 15 MB packed: not sent back)"; fi
fi
[ ${#failed[@]} -eq 0 ]
