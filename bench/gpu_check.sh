#!/usr/bin/env bash
# The GPU checks, sized for one device call each (a 15-minute device budget, 10 minutes a call).
#   bash bench/gpu_check.sh speed      # bench.speed: 4 protocols, suite vs per-task eager loop (< 8 min)
#   bash bench/gpu_check.sh learning   # MAML vs MAML + meta-dropout, Omniglot 20-way 1-shot, 1500 iterations
# Omniglot must come as a prepared cache (the data folder does not travel): on the CPU machine run
#   META_DROPOUT_CACHE=.gpu_cache python -c "from bench.data.registry import load_bank; load_bank('omniglot', 'train', '../shared/data')"
# and carry .gpu_cache. Results land in $OUT (or results/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
export META_DROPOUT_CACHE="${META_DROPOUT_CACHE:-.gpu_cache}"
out="${OUT:-results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
case "${1:-speed}" in
  speed)    timeout 500 python -m bench.speed --device cuda --budget-s 420 --out "$out/speed.json" ;;
  learning) timeout 540 python -m bench.regularizer_bench --device cuda --regularizers none meta_dropout \
              --iterations 1500 --episodes 600 --out "$out/maml_vs_meta_dropout.json" ;;
  *) echo "usage: bash bench/gpu_check.sh speed|learning" >&2; exit 2 ;;
esac
