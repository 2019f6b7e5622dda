#!/usr/bin/env bash
# The test command: sets up a fresh machine (idempotent, seconds when already done), then
# runs the test suite.  Extra arguments go to pytest, e.g. `--runslow` or `-k queue`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "${DENSEVIT_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
