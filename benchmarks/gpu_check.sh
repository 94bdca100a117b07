#!/usr/bin/env bash
# Issue 36's GPU check in one command: benchmarks/gpu_check.py does the work (see its --help). On the GPU machine:
#   bash benchmarks/gpu_check.sh            # wheels from .gpu/whl, GPT from .gpu/root, report in $OUT
# Extra arguments go to the driver (--budget-s 230, --steps ..., --sweep-jobs 6, --site DIR, ...).
set -u
export GPU_CHECK_T0="${GPU_CHECK_T0:-$(date +%s.%N)}"  # the budget counts from here
cd "$(dirname "$0")/.." || exit 2
exec "${PYTHON:-python3}" -u benchmarks/gpu_check.py "$@"
