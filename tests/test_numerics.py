"""The kernel pins that keep a seed's training the same across x86-64 CPUs (reward_designer.numerics)."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys

import pytest

from reward_designer import jobs, numerics
from reward_designer.sandbox import Limits, environment
from reward_designer.schemas import TrainJob

X86_AVX2 = platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= numerics.cpu_flags()
PINNED = ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "MKL_CBWR")


@pytest.fixture
def unpinned(monkeypatch):
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t\t: none\n")
    assert numerics.cpu_flags(info) == {"fpu", "sse2", "avx2", "fma"}
    assert numerics.cpu_flags(tmp_path / "missing") == set()


@pytest.mark.skipif(not X86_AVX2, reason="the pins are for x86-64 CPUs with AVX2")
def test_pins_on_an_avx2_cpu_and_none_without(unpinned):
    assert numerics.kernel_pins() == {**numerics.BLAS_PIN, **numerics.TORCH_PIN}
    assert numerics.kernel_pins(torch_kernels=False) == numerics.BLAS_PIN
    assert numerics.kernel_pins(flags={"sse2", "avx"}) == {}  # a CPU without AVX2 keeps its own kernels


def test_a_kernel_the_user_chose_is_left_alone(unpinned, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "SkylakeX")
    assert "OPENBLAS_CORETYPE" not in numerics.kernel_pins(flags={"avx2", "fma"})
    assert environment.worker_env("/tmp")["OPENBLAS_CORETYPE"] == "SkylakeX"  # and reaches the workers


def test_pinning_after_numpy_is_loaded_is_refused(unpinned):
    importlib.import_module("numpy")  # loaded: it has chosen its kernels

    with pytest.raises(RuntimeError, match="before numpy"):
        numerics.pin_kernels()
    assert not any(name in os.environ for name in PINNED)


@pytest.mark.skipif(not X86_AVX2, reason="the pins are for x86-64 CPUs with AVX2")
def test_pinned_process_loads_the_avx2_kernels(unpinned):
    """What a pin is for: the libraries, loaded after it, report the AVX2 kernels whatever the CPU has."""
    probe = (
        "from reward_designer.numerics import pin_kernels; pin_kernels()\n"
        "import numpy, threadpoolctl, torch\n"
        "blas = [i['architecture'] for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas']\n"
        "print(blas[0], torch.backends.cpu.get_cpu_capability())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Haswell", "AVX2"]


def test_every_worker_is_started_with_the_pins(unpinned, monkeypatch, tmp_path):
    handed = {}

    def run_worker(job_file, workdir, limits, **kwargs):
        handed.update(kwargs["extra_env"])
        raise RuntimeError("stop here")

    monkeypatch.setattr(jobs, "run_worker", run_worker)
    with pytest.raises(RuntimeError, match="stop here"):
        jobs.run_job(TrainJob(env_id="InvertedPendulum-v5", code=None, total_steps=256), tmp_path, Limits(wall_s=5))
    assert handed == numerics.kernel_pins()
