#!/usr/bin/env bash
# GPU check (CUDA, bf16), under 5 minutes on an H100/H200: the pipeline's feature extraction
# against the vit_b_16 bf16 forward ceiling. See gpu_check.py for what is measured.
#
# Usage, from anywhere:
#   PYTHON=/path/to/python benchmarks/gpu_check.sh [gpu_check.py flags]
# PYTHON defaults to `python`. It needs the project's dependencies (torch with CUDA,
# torchvision, pytorch-lightning, torchmetrics, pandas, pillow, imagehash); if bcc_pipeline
# itself is not installed (`python -m pip install -e .`), the checkout is put on PYTHONPATH.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${PYTHON:-python}"
LIMIT_SECONDS="${GPU_CHECK_TIMEOUT:-285}"

cd "$REPO"
if ! "$PYTHON" -c "import bcc_pipeline" >/dev/null 2>&1; then
    echo "gpu_check: bcc_pipeline is not installed in $PYTHON; using $REPO via PYTHONPATH" >&2
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
MISSING="$("$PYTHON" -c '
import importlib.util
names = ["torch", "torchvision", "pytorch_lightning", "torchmetrics", "imagehash", "pandas", "PIL"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
')"
if [ -n "$MISSING" ]; then
    echo "gpu_check: $PYTHON lacks: $MISSING. Install the project first: $PYTHON -m pip install -e $REPO" >&2
    exit 3
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
echo "gpu_check: $("$PYTHON" --version 2>&1), limit ${LIMIT_SECONDS}s"
exec timeout "$LIMIT_SECONDS" "$PYTHON" "$HERE/gpu_check.py" "$@"
