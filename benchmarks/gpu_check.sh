#!/usr/bin/env bash
# The GPU check (under 8 minutes on one GPU): a randomly initialised ~0.5B Qwen2 through cpt, sft and dpo
# in bf16, full and LoRA; prints tokens/s, model FLOP utilisation against the GPU's bf16 peak, and the
# measured peak memory beside `qilin plan`'s estimate (benchmarks/gpu_check.py says how each is measured).
#
#   benchmarks/gpu_check.sh [--steps 15] [--out gpu_check.md]      PYTHON=.venv/bin/python to choose one
#
# Needs a CUDA build of torch in that Python (the development machines' venv has the CPU build).
# Exits 2 without a GPU. Paste its table into docs/MEMORY.md ("GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU on this machine: nothing measured" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
# 470 s for the runs leaves the 8-minute slot room for start-up; a run cut short still printed its rows.
timeout 470 "$PY" benchmarks/gpu_check.py "$@"
