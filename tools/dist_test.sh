#!/usr/bin/env bash
# Evaluate a checkpoint on NUM_PROCESSES processes per node:
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [tools/test.py arguments]
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_PROCESSES [tools/test.py arguments]" >&2
    exit 2
fi
TOOLS=$(cd "$(dirname "$0")" && pwd)
exec "$TOOLS/dist_run.sh" "$3" "$TOOLS/test.py" "$1" "$2" "${@:4}"
