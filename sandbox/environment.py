"""The worker's environment variables: an allow-list, so no API key or token reaches it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

# Passed through when the parent has them: locale, import path, rendering,
# thread settings and the numerics pins, GPU selection. Nothing that could carry a credential.
PASS_THROUGH = (
    "LANG", "LC_ALL", "LC_CTYPE", "TZ",
    "PYTHONPATH", "PYTHONHASHSEED",
    "MUJOCO_GL", "PYOPENGL_PLATFORM", "EGL_PLATFORM", "__EGL_VENDOR_LIBRARY_FILENAMES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "NPY_DISABLE_CPU_FEATURES",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
    "LD_LIBRARY_PATH",
)

# Variables the parent uses to talk to confine_self() in the worker.
STATUS_FD = "RD_SANDBOX_STATUS_FD"
REQUIRE = "RD_SANDBOX_REQUIRE"


def worker_env(tmpdir: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        # Not the real home, nor the run folder: nothing a program leaves in
        # ~/.config or ~/.cache is read by the next worker started there.
        HOME=tmpdir,
        TMPDIR=tmpdir,
        LANG=env.get("LANG", "C.UTF-8"),
        PYTHONDONTWRITEBYTECODE="1",  # the installation is read-only in there
        PYTHONUNBUFFERED="1",  # the kept tail shows the last words of a killed worker
        PYTHONNOUSERSITE="1",  # no user site-packages: a planted .pth there would run before confinement
        MALLOC_ARENA_MAX="2",  # glibc reserves 64 MB of address space per arena, which RLIMIT_AS counts
    )
    env.update(extra or {})
    return env
