#!/usr/bin/env bash
# The GPU checks of the open issues, sized for one device call (15 minutes of device time, 10 minutes a call).
#   bash bench/benchmarks/gpu_check.sh all        # tests/execution/test_cuda_graph.py, then speed, then learning (< 10 min together)
#   bash bench/benchmarks/gpu_check.sh tests      # the graphed step equals the eager step (every learner x regularizer)
#   bash bench/benchmarks/gpu_check.sh speed      # bench.benchmarks.speed: 4 protocols, graph / eager / per-task loop, meta-test
#   bash bench/benchmarks/gpu_check.sh learning   # bench.benchmarks.learning_check: MAML vs meta-dropout, Omniglot 20-way 1-shot
# The data folder does not travel: prepare Omniglot's zips and decoded cache here, then carry both:
#   bash bench/benchmarks/gpu_check.sh prepare DATA_ROOT     # writes .gpu_data/ and .gpu_cache/ (git-ignored)
# Results land in $OUT (or results/gpu/): one log and one JSON per part.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
export META_DROPOUT_CACHE="$PWD/.gpu_cache"
out="${OUT:-results/gpu}"
mkdir -p "$out"
MTIME='2026-01-01 00:00:00'        # fixed, so the cache key (names, sizes, mtimes) matches on both machines

part() {   # part NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.log, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s) $(date +%T)"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "== $name exit $? $(date +%T)"; tail -n 25 "$out/$name.log"
}

case "${1:-all}" in
  prepare)
    mkdir -p .gpu_data/omniglot
    cp "${2:?usage: gpu_check.sh prepare DATA_ROOT}"/omniglot/images_{background,evaluation}.zip .gpu_data/omniglot/
    touch -m -d "$MTIME" .gpu_data/omniglot/*.zip
    python -c "from bench.data.registry import load_bank; [load_bank('omniglot', s, '.gpu_data') for s in ('train', 'test')]"
    du -sh .gpu_data .gpu_cache ;;
  tests)    part tests 120 python -m pytest -q -rfE tests/execution/test_cuda_graph.py ;;
  speed)    part speed 225 python -m bench.benchmarks.speed --device cuda --budget-s 175 --test-cap-s 18 --out "$out/speed.json" ;;
  learning) touch -m -d "$MTIME" .gpu_data/omniglot/*.zip
            # keep for meta-test what the speed part measured for 20-way 1-shot (both cells), else 80 s
            reserve=$(python -c "import json; t = json.load(open('$out/speed.json'))['protocols']['omniglot_20w1s']
print(int(min(150, max(40, 1.6 * t['meta_test']['seconds'] * 500 / 1000 + 15))))" 2>/dev/null || echo 80)
            part learning 225 python -m bench.benchmarks.learning_check --device cuda --data-root .gpu_data --budget-s 200 \
              --test-reserve-s "$reserve" --episodes 500 --out "$out/learning_check.json" ;;
  all)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
    python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
    bash "$0" tests; bash "$0" speed; bash "$0" learning ;;
  *) echo "usage: bash bench/benchmarks/gpu_check.sh all|tests|speed|learning|prepare DATA_ROOT" >&2; exit 2 ;;
esac
