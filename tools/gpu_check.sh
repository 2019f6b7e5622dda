#!/usr/bin/env bash
# GPU acceptance check (tests, a short DenseViT-S run with --amp, benchmarks); one table,
# JSON in the output folder.  Installs nothing: run tools/setup_env.sh first.
#   bash tools/gpu_check.sh [--out work_dirs/gpu_check] [--iters 300]   # under 8 min on one H200
#   bash tools/gpu_check.sh --device cpu --quick                      # toy sizes, any machine
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then
        PYTHON=$ROOT/.venv/bin/python
    else
        PYTHON=python
    fi
fi
cd "$ROOT"
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec "$PYTHON" tools/gpu_check.py "$@"
