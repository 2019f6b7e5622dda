#!/usr/bin/env bash
# One-command set-up of a fresh machine: a virtual environment (.venv) holding the pinned
# OpenMMLab stack, mmcv with compiled ops, and this project installed in editable mode.
#
#   bash tools/setup_env.sh            # idempotent; a second run takes seconds
#
# mmcv 2.1 is published on PyPI only as a source archive, and its build takes ~10 minutes on
# 2 cores, so the built wheel is cached outside the work tree, keyed by everything that decides
# whether it loads: mmcv version, Python tag, torch version (+ its CUDA tag) and whether CUDA ops
# were compiled.  A cached wheel is trusted only after `import mmcv.ops` and a real op call pass;
# otherwise it is removed and rebuilt.
#
# Environment:
#   DENSEVIT_VENV   where the virtual environment lives        (default: <repo>/.venv)
#   DENSEVIT_CACHE  where built wheels are kept                 (default: ~/.cache/densevit)
#   PYTHON          the interpreter that creates the venv       (default: python3.11, else python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${DENSEVIT_VENV:-$ROOT/.venv}
CACHE=${DENSEVIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/densevit}
CONSTRAINTS=$ROOT/requirements/constraints.txt
MMCV_VERSION=$(sed -n 's/^mmcv==//p' "$CONSTRAINTS")

log() { printf '[setup_env %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV with $python_bin"
    "$python_bin" -m venv "$VENV"
fi
PY=$VENV/bin/python
# Skip the pip calls when nothing that decides the environment changed since the last success.
STAMP=$VENV/.densevit-setup-stamp
stamp=$(cat "$CONSTRAINTS" "$ROOT/setup.py" "$0" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" = "$stamp" ] && "$PY" -c 'import densevit_mm, mmseg, mmdet' 2>/dev/null; then
    log "environment up to date ($VENV)"
    exit 0
fi
rm -f "$STAMP"
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }

# torch first: mmcv's build imports it, and every later install must see the same version.
log "installing torch, torchvision and build tools"
pip_install torch torchvision setuptools ninja wheel

torch_tag=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
py_tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')
ops_tag=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
WHEEL_DIR=$CACHE/wheels/mmcv-$MMCV_VERSION-$py_tag-torch$torch_tag-$ops_tag

verify_mmcv() {
    "$PY" - <<'EOF'
import torch
import mmcv.ops  # noqa: F401  (loads the compiled extension)
from mmcv.ops import nms, roi_align

boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
scores = torch.tensor([0.9, 0.8, 0.7])
_, keep = nms(boxes, scores, iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep
feat = torch.arange(16.).reshape(1, 1, 4, 4)
out = roi_align(feat, torch.tensor([[0., 0., 0., 4., 4.]]), (2, 2), 1.0, 2, 'avg', True)
assert out.shape == (1, 1, 2, 2), out.shape
EOF
}

build_mmcv() {
    local src
    src=$(mktemp -d)
    log "building mmcv $MMCV_VERSION with ops against torch $torch_tag ($ops_tag); ~10 min on 2 cores"
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$src"
    tar xzf "$src/mmcv-$MMCV_VERSION.tar.gz" -C "$src"
    # torch >= 2.10 headers need C++20; mmcv 2.1 hard-codes -std=c++17 (see densevit_mm/compat.py).
    sed -i 's/-std=c++17/-std=c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
    mkdir -p "$WHEEL_DIR"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --no-deps --no-build-isolation \
        -w "$src/dist" "$src/mmcv-$MMCV_VERSION"
    # Move into place only once complete, so an interrupted build never leaves a broken cache.
    mv "$src"/dist/mmcv-*.whl "$WHEEL_DIR/"
    rm -rf "$src"
}

install_cached_mmcv() {
    local wheel
    wheel=$(ls "$WHEEL_DIR"/mmcv-*.whl 2>/dev/null | head -n 1)
    [ -n "$wheel" ] || return 1
    # With its dependencies (mmengine, opencv, ...): the check imports them.
    pip_install --force-reinstall --no-deps "$wheel" && pip_install "$wheel" && verify_mmcv
}

if "$PY" -c 'import mmcv' 2>/dev/null && verify_mmcv 2>/dev/null; then
    log "mmcv with ops already installed and working"
elif install_cached_mmcv; then
    log "installed cached mmcv wheel from $WHEEL_DIR"
else
    log "no working cached mmcv wheel in $WHEEL_DIR"
    rm -rf "$WHEEL_DIR"
    build_mmcv
    install_cached_mmcv || { log "ERROR: freshly built mmcv fails its check"; exit 1; }
fi

log "installing the OpenMMLab stack and densevit_mm (editable)"
pip_install -e "$ROOT[tests]"
"$PY" -c 'import densevit_mm, mmpretrain, mmseg, mmdet, timm; print("stack imports: ok")'
echo "$stamp" > "$STAMP"
log "done: activate with 'source $VENV/bin/activate'"
