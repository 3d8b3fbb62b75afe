"""What the sandbox costs: start-up overhead per worker, and the critic's probe per candidate.

    python benchmarks/sandbox_overhead.py [--repeat 5] [--env HalfCheetah-v5]

"Start-up overhead" is what the sandbox adds to starting a worker: bubblewrap,
setpriv, rlimits, the clean environment, the parent's watch loop, and
confine_self() in the worker. It is measured two ways: a worker that does
nothing (stdlib json.tool reading the job file) with and without the sandbox,
and the real probe worker with and without it. Importing torch, mujoco and
gymnasium costs about a second in every worker, sandboxed or not; that is the
worker's start, not the sandbox's, and is reported separately.

The probe per candidate is Critic.check() on a small valid program: lint, a
sandboxed probe worker (imports, an env, 48 steps on 8 envs), validation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reward_designer.critic import Critic
from reward_designer.jobs import run_job
from reward_designer.sandbox import Limits, doctor, run_worker
from reward_designer.sandbox.environment import worker_env
from reward_designer.schemas import JobEnvelope, ProbeJob

PROGRAM = """
import torch

def compute_reward(state, action):
    forward = state.qvel[:, 0]
    effort = -0.1 * (action ** 2).sum(-1)
    return forward + effort, {"forward": forward, "effort": effort}
"""
LIMITS = Limits(wall_s=60, cpu_s=60, memory_mb=4096)


def median_time(fn, repeat: int) -> float:
    fn()  # warm the page cache and the one-time layer checks
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain(argv: list[str], cwd: Path) -> None:
    """The same command without the sandbox (same clean environment, no layers)."""
    env = worker_env(str(cwd))
    subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True)


def confine_cost() -> float:
    """confine_self() alone, after the imports, in a fresh process."""
    code = ("import time, torch, mujoco, gymnasium\n"
            "from reward_designer.sandbox import confine_self\n"
            "t = time.perf_counter(); confine_self(); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--env", default="HalfCheetah-v5")
    args = ap.parse_args()

    layers = [s.name for s in doctor() if s.active]
    print(f"layers active: {', '.join(layers)}")
    missing = [f"{s.name} ({s.detail})" for s in doctor() if not s.active]
    if missing:
        print("layers missing:", "; ".join(missing))
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, repeat: {args.repeat}\n")

    root = Path(tempfile.mkdtemp(prefix="rd-bench-"))
    noop = root / "noop"
    noop.mkdir()
    (noop / "job.json").write_text(json.dumps({"noop": True}))
    probe = root / "probe"
    probe.mkdir()
    job = ProbeJob(env_id=args.env, code=PROGRAM)
    (probe / "job.json").write_text(JobEnvelope(job=job).model_dump_json())
    python = [sys.executable, "-P"]

    rows = []
    t_pass = median_time(lambda: plain([*python, "-c", "pass"], noop), args.repeat)
    rows.append(("python -c pass", t_pass))
    t_noop_plain = median_time(lambda: plain([*python, "-m", "json.tool", str(noop / "job.json")], noop), args.repeat)
    rows.append(("no-op worker, unconfined", t_noop_plain))
    t_noop_box = median_time(lambda: run_worker(noop / "job.json", noop, LIMITS, module="json.tool"), args.repeat)
    rows.append(("no-op worker, sandboxed", t_noop_box))
    t_confine = statistics.median(confine_cost() for _ in range(args.repeat))
    rows.append(("confine_self() (seccomp), in the worker", t_confine))
    t_probe_plain = median_time(lambda: plain([*python, "-m", "reward_designer.worker", str(probe / "job.json")],
                                              probe), args.repeat)
    # The worker applies seccomp itself (confine_self), so this row is "no runner", not "no sandbox".
    rows.append((f"probe worker ({args.env}), outside the runner", t_probe_plain))
    t_probe_box = median_time(lambda: run_job(job, probe, LIMITS), args.repeat)
    rows.append((f"probe worker ({args.env}), sandboxed", t_probe_box))
    critic = Critic(args.env, limits=LIMITS)
    t_check = median_time(lambda: critic.check(PROGRAM, root / "critic"), args.repeat)
    rows.append(("Critic.check() per candidate (lint + sandboxed probe)", t_check))
    t_imports = median_time(lambda: plain([*python, "-c", "import torch, mujoco, gymnasium"], noop),
                            args.repeat) - t_pass

    width = max(len(r[0]) for r in rows)
    for name, t in rows:
        print(f"{name:<{width}}  {t * 1000:8.0f} ms")
    print(f"{'(of which imports of torch, mujoco, gymnasium)':<{width}}  {t_imports * 1000:8.0f} ms\n")

    start_overhead = t_noop_box - t_noop_plain + t_confine
    probe_overhead = t_probe_box - t_probe_plain
    print(f"sandbox start-up overhead (no-op worker + confine_self): {start_overhead * 1000:.0f} ms"
          "  (target <= 300 ms)")
    print(f"runner overhead on the real probe worker (no seccomp):   {probe_overhead * 1000:.0f} ms")
    print(f"probe per candidate (Critic.check):                      {t_check:.2f} s  (target <= 2 s)")


if __name__ == "__main__":
    main()
