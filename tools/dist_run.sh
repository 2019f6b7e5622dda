#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh and dist_test.sh:
#   tools/dist_run.sh NUM_PROCESSES SCRIPT [script arguments...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on every node.
# Without CUDA the processes run on CPU with the gloo backend.
set -euo pipefail
NPROC=$1
SCRIPT=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Use the project's virtual environment unless another one is active.
if [ -z "${PYTHON:-}" ]; then
    if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then
        PYTHON=$ROOT/.venv/bin/python
    else
        PYTHON=python
    fi
fi

PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$SCRIPT" "${@:3}" --launcher pytorch
