"""Same seed, same training across x86-64 CPUs: the numerics pins.

numpy's OpenBLAS, numpy's own vectorized functions, torch's vectorized ops and
MKL (torch's linear algebra, e.g. the QR of the orthogonal init) each choose
their code paths when loaded, by what the CPU offers (AVX2, AVX-512). The paths
round differently, and PPO on Hopper is chaotic enough that a last-bit
difference moves a seed from hopping to falling: docs/TUNING.md ("Across
machines") has the runs that showed it. So training processes get environment
variables, the numerics pins, that load every one of them with its AVX2 code,
which x86-64 CPUs have had for a decade.

A pin is read once, when its library loads, so it is set in a child's
environment before the child starts: every sandboxed worker gets
``numerics_pins()`` (``jobs.run_job``), and so do the benchmarks' training
processes. A value the user set is left alone, and ``RD_NUMERICS=native`` sets
none: each library then picks by CPU, as before the pins (docs/TUNING.md's
older figures were measured so). Still different across machines: a machine
with one core, where the learner does not fork (``ppo.make_learner``), and
other numpy or torch versions.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

PINS = {
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's OpenBLAS: its AVX2 code
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's vectorized ops
    "MKL_CBWR": "AVX2",  # MKL's reproducibility switch
}
NUMPY_PIN = "NPY_DISABLE_CPU_FEATURES"  # numpy's own: its AVX-512 paths off, built per machine
NATIVE = "RD_NUMERICS"  # "native": no pins


@functools.lru_cache(maxsize=4)  # a fact of the machine, asked for at every worker's start
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no /proc/cpuinfo."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def pinnable(flags: set[str] | frozenset[str] | None = None) -> bool:
    """True on an x86-64 CPU with AVX2 and FMA, whose code paths the pins choose."""
    return (platform.machine().lower() in ("x86_64", "amd64")
            and {"avx2", "fma"} <= (cpu_flags() if flags is None else flags))


def _numpy_dispatch() -> tuple[tuple[str, ...], dict[str, bool]]:
    """numpy's SIMD dispatch targets, lowest first, and which the CPU (less the disabled ones) runs."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1, whose names differ
        return (), {}
    return tuple(__cpu_dispatch__), __cpu_features__


def numpy_avx512_paths() -> str:
    """numpy's dispatch targets beyond AVX2 that this CPU runs, space-separated (numpy 2's names; "" with numpy 1,
    whose own paths stay)."""
    targets, runs = _numpy_dispatch()
    return " ".join(t for t in targets if (t == "X86_V4" or t.startswith("AVX512")) and runs.get(t))


def numerics_pins(flags: set[str] | frozenset[str] | None = None) -> dict[str, str]:
    """The environment variables that pin the code paths, less those already set; {} unless ``pinnable``
    (or with ``RD_NUMERICS=native``)."""
    if os.environ.get(NATIVE) == "native" or not pinnable(flags):
        return {}
    pins = {**PINS, NUMPY_PIN: numpy_avx512_paths()}
    return {k: v for k, v in pins.items() if v and k not in os.environ}


def loaded() -> dict[str, str]:
    """The code paths this process's numpy and torch run, and their versions: a training's result records
    them, so two trainings of one seed that differ can be told apart by what they computed with."""
    import numpy
    import threadpoolctl
    import torch

    targets, runs = _numpy_dispatch()
    return {
        "openblas": ",".join(i.get("architecture", "?") for i in threadpoolctl.threadpool_info()
                             if i["internal_api"] == "openblas"),
        "numpy_simd": next((t for t in reversed(targets) if runs.get(t)), ""),  # the highest it dispatches to
        "torch_simd": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),  # MKL has no query for it
        "numpy": numpy.__version__,
        "torch": torch.__version__,
    }
