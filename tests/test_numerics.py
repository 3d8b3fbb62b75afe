"""The numerics pins that keep a seed's training the same across x86-64 CPUs (reward_designer.numerics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reward_designer import jobs, numerics
from reward_designer.sandbox import Limits, environment
from reward_designer.schemas import TrainJob

PINNABLE = numerics.pinnable()
PINNED = (*numerics.PINS, numerics.NUMPY_PIN)
needs_avx2 = pytest.mark.skipif(not PINNABLE, reason="the pins are for x86-64 CPUs with AVX2")


@pytest.fixture
def unpinned(monkeypatch):
    """No code path chosen by the user: no pin of theirs, and no RD_NUMERICS=native."""
    for name in (*PINNED, numerics.NATIVE):
        monkeypatch.delenv(name, raising=False)


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t\t: none\n")
    assert numerics.cpu_flags(info) == {"fpu", "sse2", "avx2", "fma"}
    assert numerics.cpu_flags(tmp_path / "missing") == set()


@needs_avx2
def test_pins_on_an_avx2_cpu_and_none_without(unpinned):
    pins = numerics.numerics_pins()
    assert {k: pins[k] for k in numerics.PINS} == numerics.PINS
    assert numerics.numerics_pins(flags={"sse2", "avx"}) == {}  # a CPU without AVX2 keeps its own paths


def test_native_code_paths_on_request(unpinned, monkeypatch):
    monkeypatch.setenv("RD_NUMERICS", "native")
    assert numerics.numerics_pins(flags={"avx2", "fma"}) == {}


@pytest.mark.parametrize("name", PINNED)
def test_a_pin_the_user_set_is_left_alone(unpinned, monkeypatch, name):
    monkeypatch.setenv(name, "mine")
    assert name not in numerics.numerics_pins(flags={"avx2", "fma"})
    assert environment.worker_env("/tmp")[name] == "mine"  # and reaches the workers


def _loaded_paths(env: dict) -> dict:
    """What numpy and torch chose in a fresh process with ``env`` (numerics.loaded), numpy's path for
    float64 exp, and the bytes of a policy's initial weights (an MKL QR)."""
    probe = (
        "import hashlib, json, torch\n"
        "from numpy.lib.introspect import opt_func_info\n"
        "from reward_designer.numerics import loaded\n"
        "from reward_designer.policy import Policy\n"
        "torch.manual_seed(0)\n"
        "weights = torch.cat([p.detach().reshape(-1) for p in Policy(11, 3, [-1.0] * 3, [1.0] * 3).parameters()])\n"
        "print(json.dumps({**loaded(),\n"
        "    'exp': opt_func_info(func_name='^exp$', signature='float64')['exp']['dd']['current'],\n"
        "    'weights': hashlib.sha1(weights.numpy().tobytes()).hexdigest(),\n"
        "}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@needs_avx2
def test_a_pinned_process_loads_the_avx2_code(unpinned):
    """What the pins are for: the libraries report AVX2 code paths whatever else the CPU has, and a
    policy's initial weights are those of a process told to use AVX2 by each library's own switch."""
    pinned = _loaded_paths({**os.environ, **numerics.numerics_pins()})
    assert pinned["openblas"] == "Haswell" and pinned["torch_simd"] == "AVX2"
    for path in (pinned["numpy_simd"], pinned["exp"]):  # numpy's highest level and exp's are below AVX-512
        assert path and path != "X86_V4" and not path.startswith("AVX512"), path
    forced = _loaded_paths({**os.environ, "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
                              "MKL_CBWR": "AVX2"})
    assert pinned["weights"] == forced["weights"]


def test_a_training_records_the_config_and_numerics_it_ran_with(tmp_path, unpinned):
    """Two trainings of one seed that differ can be told apart by what they were run with."""
    outcome = jobs.run_job(TrainJob(env_id="InvertedPendulum-v5", code=None, total_steps=256, ppo={"num_envs": 4}),
                           tmp_path, Limits(wall_s=120))
    assert outcome.ok, outcome.problem
    import numpy
    import torch

    ran = outcome.result.numerics
    assert outcome.result.ppo["num_envs"] == 4 and outcome.result.ppo["total_steps"] == 256  # and the whole config
    assert ran["numpy"] == numpy.__version__ and ran["torch"] == torch.__version__
    if PINNABLE:
        assert (ran["openblas"], ran["torch_simd"], ran["mkl_cbwr"]) == ("Haswell", "AVX2", "AVX2")
        assert ran["numpy_simd"] != "X86_V4" and not ran["numpy_simd"].startswith("AVX512")


@needs_avx2
def test_every_worker_is_started_with_the_pins(unpinned, monkeypatch, tmp_path):
    handed = {}

    def run_worker(job_file, workdir, limits, **kwargs):
        handed.update(kwargs["extra_env"])
        raise RuntimeError("stop here")

    monkeypatch.setattr(jobs, "run_worker", run_worker)
    with pytest.raises(RuntimeError, match="stop here"):
        jobs.run_job(TrainJob(env_id="InvertedPendulum-v5", code=None, total_steps=256), tmp_path, Limits(wall_s=5))
    assert {k: handed.get(k) for k in numerics.PINS} == numerics.PINS
