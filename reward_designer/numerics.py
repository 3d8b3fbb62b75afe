"""Same seed, same training across x86-64 CPUs: pin the kernels numpy and torch pick by CPU.

numpy's OpenBLAS and torch's vectorized ops each choose their kernels when
loaded, by what the CPU offers (AVX2, AVX-512). The kernels round differently,
and PPO on Hopper is chaotic enough that a last-bit difference moves a seed
from hopping to falling: on an AMD EPYC machine OpenBLAS took its Haswell
(AVX2) kernels and Hopper's seed 0 ended at 3476; on the machine before it,
SkylakeX's (AVX-512), and 3650. Forcing SkylakeX's on the EPYC gave 3650
again, and HalfCheetah's seed 0 the earlier machine's 6058 instead of 6238.
torch's sigmoid and pow differ between its AVX2 and AVX-512 kernels too, and
reward programs use them. MKL (torch's matmuls) has its own switch for this,
MKL_CBWR; on the EPYC it gave the same bits with and without it.

So training processes load them with their AVX2 kernels, which x86-64 CPUs
have had for a decade. A pin is an environment variable, read once when
the library loads: it must be set before numpy or torch is imported, which is
why workers get the pins in their environment (``jobs.run_job``) and scripts
call ``pin_kernels`` first. A value the user set is left alone.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

BLAS_PIN = {"OPENBLAS_CORETYPE": "Haswell"}  # numpy's OpenBLAS: its AVX2 kernels
TORCH_PIN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}  # torch's vectorized ops, and MKL's matmuls


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no /proc/cpuinfo."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def kernel_pins(torch_kernels: bool = True, flags: set[str] | None = None) -> dict[str, str]:
    """The environment variables that pin the kernels, less those already set; {} off x86-64 or without AVX2.

    ``torch_kernels=False`` pins numpy's only, for a process that also runs
    someone else's torch code and should measure it as it ships.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    if not {"avx2", "fma"} <= (cpu_flags() if flags is None else flags):
        return {}
    pins = {**BLAS_PIN, **(TORCH_PIN if torch_kernels else {})}
    return {k: v for k, v in pins.items() if k not in os.environ}


def pin_kernels(torch_kernels: bool = True) -> dict[str, str]:
    """Set ``kernel_pins()`` in this process's environment; the pins set out.

    Raises RuntimeError if numpy (or torch, when pinning it) is already
    imported: the libraries have chosen their kernels by then, and a pin set
    afterwards would silently do nothing.
    """
    loaded = [m for m in ("numpy", "torch") if m in sys.modules and (m == "numpy" or torch_kernels)]
    if loaded:
        raise RuntimeError(f"pin_kernels() must run before {' and '.join(loaded)} is imported")
    pins = kernel_pins(torch_kernels)
    os.environ.update(pins)
    return pins
