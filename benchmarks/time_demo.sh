#!/usr/bin/env bash
# The README's main command on a fresh clone of this repository, stage by stage, each stage timed.
#   bash benchmarks/time_demo.sh [WORKDIR] [--synthetic]    # default WORKDIR: a new temporary folder
# --synthetic then times the README's second command (the synthetic sweep with known features, and the analysis
# again) on the same clone.
# Prints one line per stage ("STAGE <seconds> s, peak <MB> MB: <command>") and the total, and leaves the clone (with
# its sae_sweep_out/analysis/report.md) in WORKDIR for the results. The peak is the largest sum of the resident
# memory of the stage's processes (the sweep's parallel jobs together), sampled every second.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
synthetic=${2:-}
rm -rf "$work/clone" && git clone -q "$repo" "$work/clone" && cd "$work/clone"
export WANDB_MODE=offline HF_HUB_OFFLINE=1
stage() {
  local t0 pid peak=0 rss
  t0=$(date +%s)
  setsid "$@" > "$work/stage.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    rss=$( (ps -o rss= -s "$pid" 2>/dev/null || true) | awk '{s += $1} END {print s + 0}')
    (( rss > peak )) && peak=$rss
    sleep 1
  done
  wait "$pid" || { tail -20 "$work/stage.log"; exit 1; }
  echo "STAGE $(( $(date +%s) - t0 )) s, peak $(( peak / 1024 )) MB: $*"
}
start=$(date +%s)
stage bash -c "python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e ."
stage .venv/bin/python train.py stage=pretrain
stage .venv/bin/python train.py -m experiment=demo
stage .venv/bin/python train.py -m experiment=controls
stage .venv/bin/python analyze.py
echo "TOTAL $(( $(date +%s) - start )) s; report: $work/clone/sae_sweep_out/analysis/report.md"
if [[ $synthetic == --synthetic ]]; then
  cp -r sae_sweep_out/analysis "$work/analysis-main"
  start=$(date +%s)
  stage .venv/bin/python train.py -m experiment=synthetic
  stage .venv/bin/python analyze.py
  echo "SECOND $(( $(date +%s) - start )) s; report: $work/clone/sae_sweep_out/analysis/report.md"
fi
