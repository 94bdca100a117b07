#!/usr/bin/env bash
# Every benchmark of the README's Performance table, one after the other, on an otherwise idle machine.
#   bash benchmarks/perf_table.sh [OUT]      # default OUT: benchmarks-<date>.txt in the current folder
# Each benchmark prints medians of interleaved repeats and the ratios the table quotes; this script adds the date,
# the machine and the commit above them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks-$(date +%F).txt}
py=${PYTHON:-.venv/bin/python}
{
  echo "date: $(date -u +%FT%TZ); commit: $(git rev-parse --short HEAD); cores: $(nproc); $($py -c 'import torch; print("torch", torch.__version__)')"
  for cmd in \
    "benchmarks/bench_pretrain.py" \
    "benchmarks/bench_sae.py --steps 16" \
    "benchmarks/bench_vs_commit.py 150a642" \
    "benchmarks/bench_vs_commit.py cf4458c --configs 256x1024,256x8192" \
    "benchmarks/bench_vs_commit.py cf4458c --what eval --configs 4096x1024,4096x8192" \
    "benchmarks/bench_parallel.py" \
    "benchmarks/bench_mcs.py"; do
    echo; echo "== python $cmd"
    # shellcheck disable=SC2086
    $py $cmd 2>&1 | grep -v -i 'warn'
  done
} | tee "$out"
