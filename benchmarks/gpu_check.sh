#!/usr/bin/env bash
# The GPU path in one command, on a fresh NVIDIA host with this checkout (issue #17):
#   bash benchmarks/gpu_check.sh [--out gpu_check.md]
# Makes a venv (.venv-gpu), installs zmq-ik with the worker extra and JAX's CUDA 12 wheels,
# then runs `python -m benchmarks.gpu_check` (engine, worker start, serve, answers vs CPU).
# With no network, pre-built wheels can be put in $ZMQ_IK_WHEELS (pip --find-links).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || {
  echo "nvidia-smi failed: no NVIDIA GPU or driver here" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
[ -n "${ZMQ_IK_WHEELS:-}" ] && PIP+=(--find-links "$ZMQ_IK_WHEELS")
"${PIP[@]}" -e ".[worker]"
"${PIP[@]}" -U "jax[cuda12]"
# Several workers may share one GPU: let each allocate what it needs, not 75 % up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
exec "$VENV/bin/python" -m benchmarks.gpu_check "$@"
