#!/usr/bin/env bash
# The main job on built-in data, from a fresh machine: set up, generate the data, pretrain
# DenseViT and the global-only baseline, fine-tune them and random init on segmentation and
# detection, and print the result table (about 12 minutes on 2 CPU cores after set-up).
# Arguments go to tools/run_benchmark.py (e.g. --quick, --work-dir DIR).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "${DENSEVIT_VENV:-$ROOT/.venv}/bin/python" tools/run_benchmark.py "$@"
