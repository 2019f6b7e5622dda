#!/usr/bin/env bash
# Train under Slurm, one task per GPU:
#   [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=... PYTHON=python] \
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [tools/train.py arguments]
# GPUS is the number of tasks.  GPUS_PER_NODE=0 runs CPU-only tasks (gloo, no --gres),
# TASKS_PER_NODE of them per node (default: all GPUS on one node).  Each task gets
# CPUS_PER_TASK cores, and num_workers='auto' (the pretraining configs) gives it that many
# data workers less one: DenseViT-S near an H200's limit needs about 10 worker cores per GPU
# (docs/benchmarks.md), so give CPUS_PER_TASK=12 where the nodes have them; the log warns,
# with the workers that would keep up, when steps wait for data.
#
# Preemption and requeue.  On SIGTERM -- what Slurm sends at preemption, on scancel, and
# before the time limit with --signal=TERM@SECONDS -- every rank finishes its iteration,
# rank 0 writes WORK_DIR/preempted_iter_N.pth (atomically) and WORK_DIR/preempted naming it,
# and the tasks exit (status 143, or ended by srun once the first has exited).
# `--resume` (no path) continues from the newest readable checkpoint of WORK_DIR, or starts
# from scratch in an empty one, so the same command serves the first start and every restart.
# A requeueable job, from inside sbatch (REQUEUE=1: after a SIGTERM stop -- told by the
# WORK_DIR/preempted this run wrote -- it requeues its own job, which then resumes; a job
# that failed for another reason is not requeued):
#
#   sbatch -p PARTITION --nodes=2 --ntasks-per-node=8 --gres=gpu:8 --cpus-per-task=12 \
#       --requeue --signal=TERM@180 --time=24:00:00 --job-name=densevit_s \
#       --wrap 'REQUEUE=1 GPUS=16 CPUS_PER_TASK=12 tools/slurm_train.sh PARTITION densevit_s \
#               configs/pretrain/densevit_s.py work_dirs/densevit_s --resume'
#
# The 180 s of --signal leave time for the iteration in progress and the save.  Jobs
# preempted with PreemptMode=REQUEUE are requeued by Slurm itself.
set -uo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG [WORK_DIR] [tools/train.py arguments]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=${4:-work_dirs/$(basename "$CONFIG" .py)}
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
if [ "$GPUS_PER_NODE" = 0 ]; then
    GRES_ARGS=()
    TASKS_PER_NODE=${TASKS_PER_NODE:-$GPUS}
else
    GRES_ARGS=(--gres=gpu:"$GPUS_PER_NODE")
    TASKS_PER_NODE=${TASKS_PER_NODE:-$GPUS_PER_NODE}
fi
REQUEUE=${REQUEUE:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rm -f "$WORK_DIR/preempted"  # left by an earlier stop: only this run's counts

PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${GRES_ARGS[@]}" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$TASKS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "${PYTHON:-python}" -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
status=$?
if [ "$REQUEUE" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ] && [ -f "$WORK_DIR/preempted" ]; then
    echo "stopped by SIGTERM with $(cat "$WORK_DIR/preempted"): requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
