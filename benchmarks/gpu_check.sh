#!/usr/bin/env bash
# The GPU measurements (loader, engine overhead, evaluation, torch.compile) in one go, on a lent GPU machine.
# Run from the project root on that machine, with a folder .whl/ carried: wheels, built beforehand, of the
# packages that machine lacks (mlflow, optuna and their dependencies); they are installed when mlflow is missing.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh eager     # then, on the same warm machine:
#   OUT=/some/dir bash benchmarks/gpu_check.sh compile
#
# Every step has its own time limit and writes its log under $OUT, so a step that runs long
# costs only its own figures. "eager" (limits sum to 330 s): the latency ratio, engine vs bare
# loop for the paper and gpu presets, the loader with 4 and 8 workers, GPU evaluation and
# re-ranking. "compile" (limits sum to 400 s): FTN (g) training and both models' inference
# under torch.compile. Each part fits the device tool's 600 s per command.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a folder for the logs}
mkdir -p "$OUT"
part=${1:?say which part: eager or compile}

if ! python3 -c "import mlflow" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  site=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # ftn_core without an install

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T), limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc, $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  tail -n 12 "$OUT/$name.log" >> "$OUT/summary.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt" >> "$OUT/summary.txt"

if [ "$part" = eager ]; then
  step latency 50 python3 -m ftn_core.cost --device cuda --runs 50
  step train_eager 140 python3 benchmarks/train_bench.py --device cuda --presets paper gpu --batches 60 --repeats 2
  step data 60 python3 benchmarks/data_bench.py --workers 4 8 --images 600 --repeats 2
  step eval 80 python3 benchmarks/eval_bench.py --device cuda --skip-msmt --ref-queries 100 --repeats 2
elif [ "$part" = compile ]; then
  step train_compile 250 python3 benchmarks/train_bench.py --device cuda --presets paper --batches 60 \
    --repeats 1 --models FTN --engine-only --compile default
  step latency_compiled 150 python3 -m ftn_core.cost --device cuda --runs 50 --compile reduce-overhead
else
  echo "unknown part '$part': use eager or compile" >&2
  exit 2
fi
echo "done $(date +%T)" >> "$OUT/summary.txt"
