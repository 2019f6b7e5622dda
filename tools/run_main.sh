#!/usr/bin/env bash
# The main job on built-in data: set up, generate images, pretrain the debug-size DenseViT
# on them (CPU, about a minute), and show where the results are.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
PY=${DENSEVIT_VENV:-$ROOT/.venv}/bin/python
WORK_DIR=${WORK_DIR:-work_dirs/densevit_debug}
"$PY" tools/make_synthetic_data.py data/synthetic --num-images 256 --size 64
"$PY" tools/train.py configs/pretrain/densevit_debug.py --work-dir "$WORK_DIR" "$@"
echo "checkpoint: $WORK_DIR/$(cat "$WORK_DIR/last_checkpoint" | xargs basename)"
