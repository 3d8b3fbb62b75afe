#!/usr/bin/env bash
# Wheels for running benchmarks/gpu_check.sh on a GPU machine with no package index: one whose
# Python already has a CUDA torch, numpy, jinja2, typer, rich, pyyaml and pytest, as GPU images
# usually do, but not MuJoCo, MuJoCo Warp or the rest of what the GPU paths import. They are
# fetched at the versions installed here, for that machine's Python (x86-64 Linux), and files
# over PART_MB are split into parts (Warp's wheel is ~146 MB), for transfers with a size limit.
#
#   bash benchmarks/offline_wheels.sh DEST 3.12        # DEST: a new folder; 3.12: the GPU machine's Python
#   PART_MB=50 bash benchmarks/offline_wheels.sh DEST 3.12
#
# There, `WHEELS=DEST bash benchmarks/gpu_check.sh` joins the parts and installs the wheels first.
set -euo pipefail
DEST=${1:?usage: offline_wheels.sh DEST PYTHON_VERSION}
PYVER=${2:?usage: offline_wheels.sh DEST PYTHON_VERSION}
PART_MB=${PART_MB:-58}  # a 64 MiB transfer, less room for the checkout that travels with it
PACKAGES="mujoco mujoco-core mujoco-studio mujoco-warp warp-lang glfw pyopengl gymnasium farama-notifications
          pydantic pydantic-core annotated-types typing-inspection pyseccomp threadpoolctl"

# A folder used before could hold other versions, or parts of another split, that would go in too.
if [ -n "$(ls -A "$DEST" 2>/dev/null)" ]; then
    echo "$DEST is not empty: give a new folder" >&2
    exit 2
fi
mkdir -p "$DEST"
pins=$(python - $PACKAGES <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"{name} is not installed here: install the `test` extra first")
EOF
)
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms="$platforms --platform $p"
done
# shellcheck disable=SC2086  # the lists are meant to split into arguments
python -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version "$PYVER" \
    $platforms -d "$DEST" $pins
for wheel in "$DEST"/*.whl; do
    if [ "$(stat -c %s "$wheel")" -gt $((PART_MB * 1024 * 1024)) ]; then
        split -b "${PART_MB}M" "$wheel" "$wheel.part-" && rm "$wheel"
    fi
done
du -sh "$DEST"
ls -l "$DEST"
