#!/usr/bin/env bash
# Installs greenmim_mm and its OpenMMLab stack into the current Python.
# Safe to run repeatedly: every step is skipped when it is already satisfied.
#   - keeps a working torch+torchvision pair, otherwise installs a matched one;
#   - builds mmcv 2.1.0 with ops when `mmcv.ops` is missing (pip caches the wheel);
#   - installs mmengine, mmpretrain, mmdet, spconv and the test tools;
#   - installs this repository in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_() { "$PY" -m pip "$@"; }

step() { echo "[install] $*"; }

step "build tools (setuptools<70: mmcv's setup.py needs pkg_resources)"
pip_ install -q "setuptools<70" wheel ninja

if "$PY" -c "import torch, torchvision.ops" >/dev/null 2>&1; then
    step "keeping torch $("$PY" -c 'import torch; print(torch.__version__)') + torchvision $("$PY" -c 'import torchvision; print(torchvision.__version__)')"
else
    step "installing a matched torch 2.13.0 + torchvision 0.28.0 pair from the registry"
    # --isolated: skip the machine's local CPU-only torch wheel, which has
    # no matching torchvision build.
    pip_ install --isolated -q torch==2.13.0 torchvision==0.28.0
    "$PY" -c "import torchvision.ops"
fi

step "mmengine and OpenMMLab runtime deps"
pip_ install -q "mmengine==0.10.7" "openmim>=0.3.9"

if "$PY" -c "import mmcv.ops" >/dev/null 2>&1; then
    step "keeping mmcv $("$PY" -c 'import mmcv; print(mmcv.__version__)') (ops present)"
else
    step "building mmcv 2.1.0 with ops (about 12 min on 2 cores the first time; pip caches the wheel)"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pip_ install --no-build-isolation "mmcv==2.1.0"
    "$PY" -c "import mmcv.ops"
fi

step "mmpretrain, mmdet, spconv and tools"
pip_ install -q "mmpretrain==1.2.0" "mmdet==3.3.0" "spconv-cu120==2.3.6" \
    "scikit-image" "pycocotools" "pytest" "pytest-timeout"

step "greenmim_mm (editable)"
pip_ install -q --no-build-isolation --no-deps -e .

"$PY" -c "import greenmim_mm, mmpretrain, mmdet, mmcv.ops, spconv.pytorch; print('[install] ok: greenmim_mm', greenmim_mm.__version__)"
