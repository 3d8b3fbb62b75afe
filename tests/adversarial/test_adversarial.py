"""Hostile reward programs against the lint and the sandbox (see programs.py for the table).

All programs run first, two at a time, as probe jobs built directly (so the
lint is bypassed and the run-time layers stand on their own); then one test
per program checks its lint verdict, its outcome, and that nothing happened
outside its folder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from reward_designer.critic import probe_findings
from reward_designer.jobs import JobOutcome, run_job
from reward_designer.lint import lint
from reward_designer.policy import Policy
from reward_designer.sandbox import Limits, doctor
from reward_designer.schemas import ProbeJob

from .programs import PROGRAMS, Hostile

CHECKOUT = Path(__file__).resolve().parents[2]
ACTIVE = {s.name for s in doctor() if s.active}
# A benign probe takes ~2.5 s of CPU on a quiet machine, and went past 4 s while other
# work shared the cores: 6 s leaves room for a loaded machine.
LIMITS = dict(wall_s=25.0, cpu_s=6, memory_mb=2048, file_mb=16, disk_mb=64, max_files=2000,
              tmp_mb=16, output_kb=16)
TASK_CARD_SECRET = "aggregate: mean\n  description: mean forward speed"  # envs/halfcheetah-run.yaml


@dataclass
class Run:
    program: Hostile
    code: str
    workdir: Path
    job: JobOutcome | None = None
    skipped: str = ""
    tcp: socket.socket | None = None
    udp: socket.socket | None = None
    unix: socket.socket | None = None
    marker: Path | None = None
    escapes: tuple[Path, ...] = ()


class World:
    """Secrets to steal, places to write, a server to reach, a process to kill."""

    def __init__(self, root: Path):
        tag = secrets.token_hex(6)
        self.root, self.tag = root, tag
        self.env = {"OPENAI_API_KEY": f"sk-canary-env-{tag}", "ANTHROPIC_API_KEY": f"sk-ant-canary-{tag}",
                    "AWS_SECRET_ACCESS_KEY": f"aws-canary-{tag}"}
        self.saved_env = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        self.home_canary = Path.home() / f".rd-canary-{tag}"
        self.home_canary.write_text(f"canary-home-{tag}")
        self.checkout_canary = CHECKOUT / "tests" / "adversarial" / f".canary-{tag}"
        self.checkout_canary.write_text(f"canary-checkout-{tag}")
        self.other_run = root / "other_run"
        self.other_run.mkdir()
        (self.other_run / "run.json").write_text(json.dumps({"secret": f"canary-run-{tag}"}))
        self.canaries = [*self.env.values(), f"canary-home-{tag}", f"canary-checkout-{tag}",
                         f"canary-run-{tag}", TASK_CARD_SECRET]
        try:
            self.canaries.append(Path("/etc/shadow").read_text().splitlines()[0])
        except (OSError, IndexError):
            pass
        self.sentinel = subprocess.Popen(["sleep", "600"])
        self.worker_py = (CHECKOUT / "reward_designer" / "worker.py").read_bytes()

    def close(self) -> None:
        # An escape that a test reported must not leave litter behind.
        for run in getattr(self, "runs", {}).values():
            for path in run.escapes:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        self.sentinel.kill()
        self.sentinel.wait()
        self.home_canary.unlink(missing_ok=True)
        self.checkout_canary.unlink(missing_ok=True)
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def prepare(self, p: Hostile) -> Run:
        workdir = self.root / "runs" / p.name / "probe"
        workdir.mkdir(parents=True)
        (workdir.parent / "fitness").mkdir()
        (workdir.parent / "fitness" / "result.json").write_text('{"fitness": 1.0}')
        run = Run(program=p, code="", workdir=workdir)
        run.tcp = socket.create_server(("127.0.0.1", 0))
        port = run.tcp.getsockname()[1]
        run.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        run.udp.bind(("127.0.0.1", port))
        run.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        abstract = f"rd-adversarial-{self.tag}-{p.name}"
        run.unix.bind("\0" + abstract)
        run.unix.listen()
        for s in (run.tcp, run.udp, run.unix):
            s.setblocking(False)
        run.marker = self.root / "markers" / p.name
        run.marker.parent.mkdir(exist_ok=True)
        run.escapes = (
            Path.home() / f".rd-escape-{self.tag}-{p.name}",
            CHECKOUT / "tests" / "adversarial" / f".rd-escape-{self.tag}-{p.name}",
            self.other_run / f"pwned-{p.name}",
            Path("/tmp") / f"rd-escape-{self.tag}-{p.name}",
            Path("/etc") / f"rd-escape-{self.tag}-{p.name}",
        )
        fills = {
            "@PORT@": str(port), "@ABSTRACT@": abstract, "@SENTINEL@": str(self.sentinel.pid),
            "@CHECKOUT@": str(CHECKOUT), "@HOME_CANARY@": str(self.home_canary),
            "@OTHER_RUN@": str(self.other_run), "@MARKER@": str(run.marker),
            "@ESCAPES@": repr([str(e) for e in run.escapes]),
        }
        run.code = re.sub("|".join(map(re.escape, fills)), lambda m: fills[m.group(0)], p.code)
        return run


def _execute(run: Run) -> Run:
    missing = [n for n in run.program.needs if not ACTIVE & set(n.split("|"))]
    if missing:
        run.skipped = f"needs the {', '.join(missing)} layer(s), not active here"
        return run
    job = ProbeJob(env_id="HalfCheetah-v5", code=run.code, num_envs=2, steps=4)
    run.job = run_job(job, run.workdir, Limits(**{**LIMITS, **run.program.limits}))
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("adversarial"))
    runs = [w.prepare(p) for p in PROGRAMS]
    # Two at a time (two cores); each worker is one process, as in production.
    with ThreadPoolExecutor(max_workers=2) as pool:
        w.runs = {r.program.name: r for r in pool.map(_execute, runs)}
    yield w
    w.close()


def test_at_least_forty_programs_and_names_unique():
    assert len(PROGRAMS) >= 40
    assert len({p.name for p in PROGRAMS}) == len(PROGRAMS)
    assert any(not p.lint for p in PROGRAMS), "some must get past the lint"


def _channels(run: Run) -> dict[str, str]:
    """Everything that goes back to the parent (and from there, maybe, to the LLM)."""
    job = run.job
    out = {"stdout": job.sandbox.stdout_tail, "stderr": job.sandbox.stderr_tail, "problem": job.problem,
           "result": job.result.model_dump_json() if job.result else ""}
    for path in run.workdir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                out[f"file {path.name}"] = f.read(1 << 20).decode("utf-8", errors="replace")
    return out


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_hostile_program(world, program: Hostile):
    run = world.runs[program.name]
    assert bool(lint(run.code)) == program.lint, lint(run.code) or "passed the lint"
    if run.skipped:
        pytest.skip(run.skipped)
    job, box = run.job, run.job.sandbox

    # Nothing secret reached any channel back.
    for where, text in _channels(run).items():
        for canary in world.canaries:
            assert canary not in text, f"{canary!r} leaked through {where}"
    # Nothing written outside its folder; no process it spawned did anything.
    for path in run.escapes:
        assert not path.exists(), f"wrote outside its folder: {path}"
    assert not run.marker.exists(), "a spawned process or escaped code created the marker"
    assert (run.workdir.parent / "fitness" / "result.json").read_text() == '{"fitness": 1.0}'
    assert (CHECKOUT / "reward_designer" / "worker.py").read_bytes() == world.worker_py
    # No connection reached the loopback servers; the test's own process is alive.
    assert select.select([run.tcp, run.udp, run.unix], [], [], 0)[0] == [], "a connection got out"
    assert world.sentinel.poll() is None, "the sentinel process was killed"
    # Bounded output, whatever it printed.
    assert len(box.stdout_tail) <= LIMITS["output_kb"] * 1024
    assert len(box.stderr_tail) <= LIMITS["output_kb"] * 1024
    assert box.wall_s < LIMITS["wall_s"] + 10

    expect, context = program.expect, f"{box.detail}; problem={job.problem!r}; stderr={box.stderr_tail[-800:]!r}"
    if expect in ("seccomp", "cpu", "wall", "disk", "cpu|wall"):
        assert box.limit in expect.split("|"), context
        assert job.result is None
    elif expect == "error":
        assert job.result is not None and not job.result.ok, context
        assert re.search(program.match, job.result.error), job.result.error[-500:]
        assert len(job.result.error) <= 4000
    elif expect == "finding":
        assert job.result is not None and job.result.ok, context
        assert any(re.search(program.match, f) for f in probe_findings(job.result))
    EXTRA_CHECKS.get(program.name, lambda w, r: None)(world, run)


def _clean_probe(workdir: Path) -> JobOutcome:
    code = "def compute_reward(state, action):\n    return state.obs[:, 0], {'x': state.obs[:, 0]}\n"
    return run_job(ProbeJob(env_id="HalfCheetah-v5", code=code, num_envs=2, steps=4), workdir, Limits(**LIMITS))


def _planted_code_never_runs(world: World, run: Run) -> None:
    # The next worker started in the same folder imports nothing planted there.
    again = _clean_probe(run.workdir)
    assert again.ok, again.problem
    assert "PLANTED-CODE-RAN" not in again.sandbox.stderr_tail + again.sandbox.stdout_tail
    assert not (run.workdir / "planted-code-ran").exists()


def _patches_die_with_the_worker(world: World, run: Run) -> None:
    fresh = run.workdir.parent / "after"
    fresh.mkdir()
    again = _clean_probe(fresh)
    assert again.ok and again.result.reward_mean != 0.0, again.problem


def _only_plain_files_left(world: World, run: Run) -> None:
    # Nothing is left that could redirect the parent's later reads or writes.
    for path in run.workdir.rglob("*"):
        assert path.is_dir() or (path.is_file() and not path.is_symlink() and path.stat().st_nlink == 1), path


def _no_result_through_a_link(world: World, run: Run) -> None:
    assert run.job.result is None  # the link was removed before the parent looked
    _only_plain_files_left(world, run)


def _pickle_never_loads(world: World, run: Run) -> None:
    policy = run.workdir / "policy.npz"
    if policy.exists():
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do, as long as nothing unpickles
            Policy.load(policy)
        with pytest.raises(ValueError, match="allow_pickle"):
            dict(np.load(policy, allow_pickle=False))
    assert not run.marker.exists()


EXTRA_CHECKS = {
    "plant_modules_for_next_run": _planted_code_never_runs,
    "patch_torch_and_numpy": _patches_die_with_the_worker,
    "symlink_result_to_secret": _no_result_through_a_link,
    "fifo_result": _no_result_through_a_link,
    "hardlink_into_folder": _only_plain_files_left,
    "pickle_payload_policy": _pickle_never_loads,
}

