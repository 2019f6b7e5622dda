#!/usr/bin/env bash
# Train on NUM_PROCESSES processes (GPUs, or CPU processes without CUDA) per node:
#   tools/dist_train.sh CONFIG NUM_PROCESSES [tools/train.py arguments]
# e.g. tools/dist_train.sh configs/pretrain/densevit_s.py 8 --amp
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCESSES [tools/train.py arguments]" >&2
    exit 2
fi
TOOLS=$(cd "$(dirname "$0")" && pwd)
exec "$TOOLS/dist_run.sh" "$2" "$TOOLS/train.py" "$1" "${@:3}"
