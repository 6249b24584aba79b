#!/usr/bin/env bash
# Issue 10's GPU benchmark in one command, under 8 minutes on one H100/H200 with 16 cores:
# installs what the project needs and the machine lacks from wheels beside the checkout
# (benchmarks/wheels; benchmarks/README.md says how to download them), then runs gpu_check.py
# (see its docstring) with what is left of the time budget.
#
# Usage, from anywhere:
#   benchmarks/gpu_check.sh [gpu_check.py flags]     # e.g. --cpu-smoke to check it on a CPU
# Environment: PYTHON (default python3), WHEELS (default benchmarks/wheels),
# GPU_CHECK_BUDGET (seconds for everything, default 470).
# Exit status: 0 every target met; 1 a target missed or a stage unfinished; 2 no CUDA device;
# 3 a dependency missing and not installable from the wheels.
set -euo pipefail

BEGAN=$SECONDS
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-$HERE/wheels}"
BUDGET="${GPU_CHECK_BUDGET:-470}"
INSTALL_LIMIT=60

cd "$REPO"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
echo "gpu_check.sh: $("$PYTHON" --version 2>&1) at $(command -v "$PYTHON"), budget ${BUDGET}s"

# The project's dependencies (pyproject.toml) that this Python lacks or has in a version
# that does not fit.
MISSING="$("$PYTHON" - <<'EOF'
import tomllib
from importlib.metadata import PackageNotFoundError, version

from packaging.requirements import Requirement

with open("pyproject.toml", "rb") as handle:
    requirements = [Requirement(r) for r in tomllib.load(handle)["project"]["dependencies"]]
for requirement in requirements:
    try:
        fits = requirement.specifier.contains(version(requirement.name), prereleases=True)
    except PackageNotFoundError:
        fits = False
    if not fits:
        print(requirement)
EOF
)"
if [ -n "$MISSING" ]; then
    echo "gpu_check.sh: installing from $WHEELS: $(echo $MISSING)"
    if [ ! -d "$WHEELS" ]; then
        echo "gpu_check.sh: no $WHEELS (no network here). Download the wheels first: see" \
            "benchmarks/README.md, 'Wheels for the GPU machine'." >&2
        exit 3
    fi
    if ! timeout "$INSTALL_LIMIT" "$PYTHON" -m pip install --quiet --no-index \
            --find-links "$WHEELS" $MISSING; then
        # Seen on the GPU machine: "Cannot install mlflow-skinny and requests==2.34.2", although
        # the packages work together. Then install the wheels of the packages this Python
        # lacks, as they are, and check that the project's imports work.
        echo "gpu_check.sh: pip could not resolve the wheels against this Python's packages;" \
            "installing the wheels of the packages it lacks without resolution."
        if ! timeout "$INSTALL_LIMIT" "$PYTHON" - "$WHEELS" <<'PY' \
                || ! "$PYTHON" -c "import dagster, dagster_webserver, imagehash, mlflow, captum"; then
import re
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path


def norm(name):
    return re.sub(r"[-_.]+", "-", name.lower())


have = {norm(d.metadata["Name"]) for d in distributions()}
wheels = [str(w) for w in sorted(Path(sys.argv[1]).glob("*.whl"))
          if norm(w.name.split("-")[0]) not in have]
print(f"gpu_check.sh: {len(wheels)} wheels")
command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
sys.exit(subprocess.run([*command, *wheels]).returncode)
PY
            echo "gpu_check.sh: could not install $(echo $MISSING) from $WHEELS. See" \
                "benchmarks/README.md, 'Wheels for the GPU machine'." >&2
            exit 3
        fi
    fi
    echo "gpu_check.sh: installed in $((SECONDS - BEGAN))s"
fi

# Measure this checkout, whatever copy of bcc_pipeline the Python may have installed.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
LEFT=$((BUDGET - (SECONDS - BEGAN)))
exec timeout --kill-after=5 "$LEFT" "$PYTHON" "$HERE/gpu_check.py" --deadline "$((LEFT - 5))" "$@"
