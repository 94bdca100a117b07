#!/usr/bin/env bash
# Makes .gpu/, the folder issue 36's GPU check (benchmarks/gpu_check.sh) carries to the GPU machine, on a CPU machine
# with PyPI (run it from a checkout set up as the README says, .venv included):
#   bash benchmarks/gpu_prepare.sh
#   .gpu/whl/             wheels for the GPU image's Python 3.12 (the versions of constraints.txt), which lacks them
#   .gpu/whl/ifneeded/    wheels installed there only when the image's own version is outside needs.json's ranges
#   .gpu/root/            an SAE_SWEEP_ROOT with the token cache and the GPT of a default `train.py stage=pretrain`
#   .gpu/cpu_reference.json  that pretraining's tokens/s and validation curve, and README figures, for the report
# Every part already there is kept (the pretraining, 10-20 min on 2 cores, runs only without a GPT or a reference;
# its scratch root is outputs/gpu_prepare/). Then the device command it prints at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
GPU=.gpu WHL=.gpu/whl IFN=.gpu/whl/ifneeded RUN=outputs/gpu_prepare
t0=$(date +%s)

WHEELS=(hydra-core omegaconf antlr4-python3-runtime hydra-joblib-launcher wandb annotated-types cwevals distro
  googleapis-common-protos opentelemetry-api opentelemetry-exporter-http-transport opentelemetry-exporter-otlp-common
  opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-otlp-proto-http opentelemetry-proto
  opentelemetry-sdk opentelemetry-semantic-conventions platformdirs pydantic pydantic-core sniffio typing-inspection)
IFNEEDED=(protobuf typing-extensions click)
EXTRA_PINS=()  # NAME==VERSION for a wheel constraints.txt does not list

norm() { tr 'A-Z_.' 'a-z--' <<<"$1"; }
pin() {  # NAME -> name==version, from EXTRA_PINS or constraints.txt; fails if neither has it
  local n v
  n=$(norm "$1")
  for p in "${EXTRA_PINS[@]}"; do [[ $(norm "${p%%==*}") == "$n" ]] && { echo "$n==${p#*==}"; return; }; done
  v=$(awk -F'==' -v n="$n" '{k=tolower($1); gsub(/[_.]/, "-", k)} k==n {print $2}' constraints.txt)
  [[ -n $v ]] || { echo "gpu_prepare: no version for $1 in constraints.txt or EXTRA_PINS" >&2; return 1; }
  echo "$n==$v"
}
fetch() {  # DIR NAME...: the pinned wheels for CPython 3.12 on manylinux x86_64 (antlr4 4.9.3 is sdist-only: built)
  local dir=$1 specs=() s
  shift
  mkdir -p "$dir"
  for s in "$@"; do s=$(pin "$s"); specs+=("$s"); done
  local dl=()
  for s in "${specs[@]}"; do
    if [[ $s != antlr4-python3-runtime==* ]]; then dl+=("$s")
    elif [[ ! -e $dir/antlr4_python3_runtime-${s#*==}-py3-none-any.whl ]]; then
      python3 -m pip wheel -q --no-deps -w "$dir" "$s"
    fi
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" "${dl[@]}"
  # exactly these wheels in DIR, nothing stale
  local want have
  want=$(printf '%s\n' "${specs[@]}" | sort)
  have=$(for f in "$dir"/*.whl; do b=${f##*/} r=${b#*-}; echo "$(norm "${b%%-*}")==${r%%-*}"; done | sort)
  [[ $want == "$have" ]] ||
    { echo "gpu_prepare: $dir differs from the pins:"; diff <(echo "$want") <(echo "$have"); exit 1; } >&2
}

echo "== wheels"
fetch "$WHL" "${WHEELS[@]}"
fetch "$IFN" "${IFNEEDED[@]}"
cat >"$IFN/needs.json" <<'EOF'
{
  "_comment": "Installed only when the image's own version is missing or outside every 'ok' range [low, high): wandb 0.31 reads protobuf 5.x, >= 6.30 or >= 7.34 (its generated code checks the runtime); pydantic 2.14 needs typing_extensions >= 4.16; wandb needs click >= 8.2.",
  "protobuf": [["5", "6"], ["6.30", "7"], ["7.34", "8"]],
  "typing_extensions": [["4.16", null]],
  "click": [["8.2", null]]
}
EOF

echo "== GPT"
if [[ -s $GPU/root/store/gpt-embedded-s0/latest && -s $GPU/cpu_reference.json ]]; then
  echo "kept: $GPU/root and $GPU/cpu_reference.json (delete them to pretrain again)"
else
  if [[ ! -s $RUN/command_s ]]; then  # a fresh, whole run: its timings are the reference
    rm -rf "$RUN" && mkdir -p "$RUN"
    s=$(date +%s.%N) && cut -d' ' -f1 /proc/loadavg >"$RUN/load_at_start"
    SAE_SWEEP_ROOT=$RUN nice -n 10 "$PY" train.py stage=pretrain logger=none trainer.progress_bar=false \
      2>&1 | tee "$RUN/pretrain.log"
    python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" "$s" "$(date +%s.%N)" \
      >"$RUN/command_s"
  fi
  rm -rf "$GPU/root" && mkdir -p "$GPU/root"
  cp -a "$RUN/cache" "$RUN/store" "$GPU/root/"  # what the check reads; not the run's checkpoints and logs
  "$PY" - "$RUN" "$(cat "$RUN/command_s")" >"$GPU/cpu_reference.json.tmp" <<'EOF'
import json, os, platform, sys
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
from gpu_check import parse_pretrain  # the parser the GPU's pretrain step is read with

run, command_s = Path(sys.argv[1]), float(sys.argv[2])
m = parse_pretrain(run / "pretrain.log", run)
store = run / "store/gpt-embedded-s0"
meta = json.loads((store / (store / "latest").read_text().strip() / "artifact.json").read_text())["metadata"]
assert m["steps_logged_to"] == meta["steps"] and m["tokens"] == meta["tokens_seen"], (m, meta)
machine = (f"{os.cpu_count()}-core dev machine, torch {torch.__version__}, Python {platform.python_version()}, "
           f"nice 10, load average {(run / 'load_at_start').read_text().strip()} at the start")
ref = {
    "_comment": "CPU figures for gpu_check.py to print beside the GPU's. 'pretrain' is the run that made the GPT in "
    f".gpu/root (benchmarks/gpu_prepare.sh: {machine}); 'readme' quotes README.md's fresh-clone run.",
    "pretrain": {
        "machine": machine,
        "steps": meta["steps"],
        "command_s": round(command_s, 1),
        "tokens": m["tokens"],
        "tokens_per_s": m["tokens_per_s"],
        "train_and_export_s": round(m["train_and_export_s"], 1),
        "val_loss": m["val_loss"],
        "val_curve": m["val_curve"],
    },
    "sweep": "README (2-core machine, 2 jobs at a time, torch threads 1 each): experiment=demo took 32 min 40 s; "
    "every dictionary met the stopping rule after 9,250 to 14,250 steps (2.4M-3.6M activations); a pair of jobs "
    "took 1.1-1.4 min at J=256, 2.3 min at 1024, 6.5-7.8 min at 4096, 13-16 min at 8192. Report: high-MCS counts "
    "against J=8192 (seed 0) 233, 348, 437, 496, 533 for J=256...4096 (91.0%, 68.0%, 42.7%, 24.2%, 13.0%); "
    "Pearson r of J=1024 against 2048 and 4096 0.982; W1 of the low mode vs Rand 1 at J=1024 0.0090 (p=0.001); "
    "analyze.py 91 s with controls and synthetic.",
    "readme": {"pretrain_lightning_tokens_per_s_bench": 25295, "pretrain_idle_s": 946, "val_loss": 4.35},
}
print(json.dumps(ref, indent=1))
EOF
  mv "$GPU/cpu_reference.json.tmp" "$GPU/cpu_reference.json"
fi

echo "== done in $(($(date +%s) - t0)) s: $(du -sh "$GPU" | cut -f1) in $GPU" \
  "($(find "$WHL" -name '*.whl' | wc -l) wheels)"
grep -E '"(val_loss|tokens_per_s|command_s)"' "$GPU/cpu_reference.json" | head -3
cat <<'EOF'
Then, on the GPU machine (the device tool's run: carry [".gpu"], timeout_s 300):
  bash benchmarks/gpu_check.sh --budget-s 235
EOF
