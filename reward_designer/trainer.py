"""Trainer: one candidate's PPO training, in a sandboxed worker."""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from pathlib import Path
from typing import Callable

from .algorithms import DEFAULT, get_algorithm
from .executor import Executor, LocalExecutor
from .jobs import JobOutcome
from .lint import reads_contacts
from .sandbox import Limits, read_output
from .schemas import FitnessSpec, Sim, TrainJob, WarmJob


# Where a training in a folder keeps its checkpoint, and how many updates apart it writes one: a
# training killed half-way continues from its last one.
CHECKPOINT = "checkpoint.npz"
CHECKPOINT_EVERY = 50
MAX_PROGRESS_BYTES = 8 * 1024 * 1024
MAX_PROGRESS_LINE = 16 * 1024


def _number(v) -> bool:
    return isinstance(v, int) or (isinstance(v, float) and math.isfinite(v))


def read_progress(path: Path, max_bytes: int = MAX_PROGRESS_BYTES) -> list[dict]:
    """The training log's lines in its last ``max_bytes``, numbers only; written by a worker that ran
    untrusted code, so read and parsed defensively (a cut first line fails to parse and is skipped)."""
    rows = []
    try:
        text = read_output(path, max_bytes, tail=True).decode(errors="replace")
    except OSError:  # absent, or swapped for a link or a FIFO
        return rows
    for line in text.splitlines():
        if len(line) > MAX_PROGRESS_LINE:  # ours are short; a long one is planted (deep nesting, huge ints)
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict):
            rows.append({k: v for k, v in row.items() if _number(v)})
    return rows


def thin(rows: list[dict], keep: int = 6) -> list[dict]:
    """A few evenly spaced rows of a training log, last included."""
    if len(rows) <= keep:
        return rows
    return [rows[round(i * (len(rows) - 1) / (keep - 1))] for i in range(keep)]


def check_trainable(env_id: str, env_kwargs: dict | None = None, algorithm: str = DEFAULT) -> None:
    """ValueError, saying why, unless ``algorithm`` can train on ``env_id`` (PPO: Box observations and actions).

    Cheap (one ``gym.make``, once per env, kwargs and algorithm in a process): callers run it before
    anything costly, such as an LLM call, and again wherever they need it.
    """
    _check_trainable(env_id, json.dumps(env_kwargs or {}, sort_keys=True), algorithm)


@functools.cache  # a passed check only; a failed one raises and is not kept
def _check_trainable(env_id: str, env_kwargs_json: str, algorithm: str) -> None:
    import gymnasium as gym

    from .mjlog import route_mujoco_warnings

    route_mujoco_warnings()  # before the env is made: MuJoCo's own handler prints to the console
    check_spaces = get_algorithm(algorithm).check_spaces
    try:
        env = gym.make(env_id, **json.loads(env_kwargs_json))
    except Exception as exc:  # noqa: BLE001 - a bad kwarg, a missing dependency, a broken asset: say which
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"{env_id}: cannot make it: {type(exc).__name__}" + (f": {detail}" if detail else "")) from None
    try:
        check_spaces(env.observation_space, env.action_space)
    except ValueError as exc:
        raise ValueError(f"{env_id}: {exc}") from None
    finally:
        env.close()


class Trainer:
    def __init__(
        self,
        env_id: str,
        steps: int,
        env_kwargs: dict | None = None,
        seed: int = 0,
        device: str = "cpu",
        ppo: dict | None = None,
        limits: Limits | None = None,
        sim: Sim = "mujoco",
        kernel_dir: Path | None = None,
        executor: Executor | None = None,
        algorithm: str = DEFAULT,
    ):
        """``sim`` "warp" trains on one MuJoCo Warp batch on ``device``; its kernels are compiled
        once, by ``prepare``, into ``kernel_dir`` (None: by each training, for itself).
        ``algorithm``: an ``algorithms.ALGORITHMS`` name; ``ppo`` holds overrides of its config."""
        self.env_id, self.steps, self.env_kwargs = env_id, steps, env_kwargs or {}
        self.seed, self.device, self.ppo = seed, device, ppo or {}
        # Generous by default: 1M steps take about a minute at full speed, far longer on a busy laptop.
        # On a GPU the memory limit is on resident memory: CUDA cannot start under RLIMIT_AS.
        self.limits = limits or Limits(wall_s=max(600.0, steps / 500), cpu_s=int(max(1200, steps / 250)),
                                       memory_mb=8192, address_space=not device.startswith("cuda"))
        self.executor = executor or LocalExecutor()
        self.sim, self.kernel_dir, self.algorithm = sim, kernel_dir, algorithm
        self._kernels: Path | None = None  # set by prepare()
        self._preparing = threading.Lock()  # candidates may train in parallel threads

    @property
    def batch(self) -> int:
        """Env steps per update: a training takes whole batches."""
        return get_algorithm(self.algorithm).batch_steps(self.env_id, self.sim, self.ppo)

    @property
    def updates(self) -> int:
        """The updates a training takes: ``steps`` in whole batches, rounded down, at least one."""
        return max(1, self.steps // self.batch)

    @property
    def planned_steps(self) -> int:
        """The env steps a training takes: its updates' whole batches."""
        return self.updates * self.batch

    def steps_at(self, budget: float) -> int:
        """The env steps of a ``budget`` fraction of the training: whole batches, at least one, at most all."""
        return min(self.planned_steps, max(1, round(budget * self.updates)) * self.batch)

    def rounding_note(self) -> str | None:
        """What to tell the user when ``steps`` is under one batch (rounding down loses under a batch)."""
        if self.planned_steps <= self.steps:
            return None
        return (f"note: PPO on {self.env_id} trains whole batches of {self.batch} steps: "
                f"training {self.planned_steps}, not {self.steps}")

    def check(self) -> None:
        """ValueError, saying why, unless the algorithm can train on the env with the ``ppo`` overrides: the
        config a training would make, checked here."""
        try:
            get_algorithm(self.algorithm).make_config(self.env_id, self.sim, self.ppo, total_steps=self.steps,
                                                      seed=self.seed, device=self.device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.algorithm} overrides: {exc}") from None
        check_trainable(self.env_id, self.env_kwargs, self.algorithm)

    def prepare(self) -> None:
        """Check that PPO can train on the env and, for sim "warp", compile MuJoCo Warp's kernels
        for it, once, before any training.

        A worker that loads no reward program compiles them (tens of seconds)
        into ``kernel_dir``; every training then loads them read-only, so no
        candidate compiles them again, and none can change what the next one
        loads. Raises ValueError with the reason when PPO or Warp cannot run the env here.
        """
        with self._preparing:
            self.check()
            if self.sim == "warp" and self.kernel_dir is not None and self._kernels is None:
                self._kernels = self._compile_kernels()

    def _compile_kernels(self) -> Path:
        kernels = self.kernel_dir.resolve() / "kernels"
        job = WarmJob(env_id=self.env_id, env_kwargs=self.env_kwargs, seed=self.seed, device=self.device,
                      kernels=str(kernels))
        limits = self.limits.model_copy(update={"wall_s": 1800, "cpu_s": 3600})
        outcome = self.executor.run(job, self.kernel_dir, limits)
        if not outcome.ok:
            raise ValueError("MuJoCo Warp: " + (outcome.result.error if outcome.result else outcome.problem))
        return kernels

    def train(
        self,
        code: str | None,
        workdir: Path,
        fitness: FitnessSpec | None = None,
        on_progress: Callable[[int], None] | None = None,
        stop_at_steps: int | None = None,
    ) -> JobOutcome:
        """Train on ``code`` (None: the env's own reward); the policy lands in ``workdir/policy.npz``.

        A checkpoint (``workdir/checkpoint.npz``) is saved every ``CHECKPOINT_EVERY`` updates, and a
        training that finds one there (killed, or stopped early) continues it rather than starting
        over: the folder is one training's (``CandidateFolder.clear`` removes it with the rest).
        ``stop_at_steps``: stop, with a checkpoint, after the update that reaches these env steps
        (the result says ``complete=False``); the schedules stay those of the whole ``steps``.
        ``on_progress(steps trained)`` is called about once a second; if it raises, the worker is
        killed and the exception goes on."""
        progress, checkpoint = workdir / "progress.jsonl", workdir / CHECKPOINT
        resume = checkpoint.is_file() and not checkpoint.is_symlink()
        if not resume:
            progress.unlink(missing_ok=True)  # an earlier attempt that saved nothing restarts from scratch

        last = [0.0]

        def poll() -> None:
            # Once a second is plenty for a progress bar, and keeps re-reading the log cheap. Called
            # before the first update too: a callback that raises stops the training (its worker is killed).
            if on_progress is not None and time.monotonic() - last[0] > 1.0:
                last[0] = time.monotonic()
                rows = read_progress(progress, 64 * 1024)  # the last line is all a progress bar needs
                on_progress(int(rows[-1].get("global_step", 0)) if rows else 0)

        self.prepare()
        job = TrainJob(env_id=self.env_id, env_kwargs=self.env_kwargs, seed=self.seed, code=code,
                       algorithm=self.algorithm, fitness=fitness, total_steps=self.steps, device=self.device,
                       ppo=self.ppo, sim=self.sim, kernel_cache=str(self._kernels) if self._kernels else None,
                       contacts=reads_contacts(code, fitness.code if fitness else None),
                       checkpoint=str(checkpoint.resolve()), checkpoint_every=CHECKPOINT_EVERY,
                       stop_at_steps=stop_at_steps, resume_from=str(checkpoint.resolve()) if resume else None)
        return self.executor.run(job, workdir, self.limits, poll=poll,
                                 read_only=[self._kernels] if self._kernels else ())
