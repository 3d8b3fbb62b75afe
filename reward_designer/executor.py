"""Executor: where sandboxed jobs run. Submit a job, get its validated result, cancel.

Every worker job (the critic's probe, a training, an analysis's rollout and
reward evaluation, Warp's kernel compilation) goes through one executor, so
where jobs run and how many cores each takes is decided here and nowhere else.

    executor = LocalExecutor(slots=2)             # two jobs at once, each on half the cores
    outcome = executor.run(job, workdir, limits)  # or executor.submit(...) -> Future[JobOutcome]
    executor.cancel()                             # kills the jobs in flight; later ones raise Cancelled

A new executor (Ray, a batch queue) is one class with ``slots``, ``submit``,
``run`` and ``cancel``, and one line in ``EXECUTORS``.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from .jobs import JobOutcome, run_job
from .sandbox import Limits
from .schemas import Job

T = TypeVar("T")
R = TypeVar("R")


class Cancelled(Exception):
    """The executor was cancelled: the job was stopped, or never started."""


class Executor(Protocol):
    slots: int  # jobs that run at once: a round trains this many candidates together

    def submit(self, job: Job, workdir: Path, limits: Limits, *, poll: Callable[[], None] | None = None,
               read_only: Iterable[Path] = ()) -> Future[JobOutcome]:
        """Start ``job`` confined to ``workdir``. ``poll`` is called while it runs; if it raises, the
        job's worker is killed and the future holds the exception. ``read_only``: further inputs."""
        ...

    def run(self, job: Job, workdir: Path, limits: Limits, *, poll: Callable[[], None] | None = None,
            read_only: Iterable[Path] = ()) -> JobOutcome:
        """``submit(...).result()``."""
        ...

    def cancel(self) -> None:
        """Stop every job in flight; every later one raises Cancelled."""
        ...

    def raise_if_cancelled(self) -> None:
        """Cancelled once ``cancel`` was called: for work between jobs (an LLM call) to stop too."""
        ...


def core_sets(slots: int, cores: list[int]) -> list[list[int]]:
    """The CPU budget: ``slots`` jobs at once never share a core while there are enough of them.

    Each job's simulator slabs and learner twin size themselves to the cores it
    is given (its CPU affinity), so parallel trainings never oversubscribe the
    machine. With more slots than cores, jobs take a core each, in turn.
    """
    if slots >= len(cores):
        return [[cores[i % len(cores)]] for i in range(slots)]
    share, extra = divmod(len(cores), slots)
    sets, start = [], 0
    for i in range(slots):
        size = share + (i < extra)
        sets.append(cores[start:start + size])
        start += size
    return sets


def available_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity, jobs share every core
        return list(range(os.cpu_count() or 1))


class PooledExecutor:
    """What every executor here shares: ``slots`` threads, each waiting on one job at a time
    (``_run``, a subclass's), and the cancel flag they all check."""

    def __init__(self, slots: int, require_sandbox: bool, thread_name: str):
        self.slots, self.require_sandbox = slots, require_sandbox
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix=thread_name)
        self._cancelled = threading.Event()

    def submit(self, job, workdir, limits, *, poll=None, read_only=()) -> Future[JobOutcome]:
        self.raise_if_cancelled()
        return self._pool.submit(self._run, job, Path(workdir).resolve(), limits, poll, tuple(read_only))

    def run(self, job, workdir, limits, *, poll=None, read_only=()) -> JobOutcome:
        return self.submit(job, workdir, limits, poll=poll, read_only=read_only).result()

    def cancel(self) -> None:
        self._cancelled.set()

    def raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled("stopped")

    def _run(self, job, workdir: Path, limits: Limits, poll, read_only: tuple) -> JobOutcome:
        raise NotImplementedError


class LocalExecutor(PooledExecutor):
    """Jobs in sandboxed worker processes on this machine, ``slots`` at once, each on its own cores."""

    def __init__(self, slots: int = 1, require_sandbox: bool = False, cores: list[int] | None = None):
        super().__init__(slots, require_sandbox, "job")
        self._free: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
        for cores_of_one in core_sets(slots, cores or available_cores()):
            self._free.put(cores_of_one)

    def _run(self, job, workdir, limits, poll, read_only) -> JobOutcome:
        def watched() -> None:
            self.raise_if_cancelled()
            if poll is not None:
                poll()

        cores = self._free.get()  # never waits: the pool runs at most ``slots`` of these at once
        try:
            self.raise_if_cancelled()
            return run_job(job, workdir, limits, poll=watched, require_sandbox=self.require_sandbox,
                           read_only=read_only, cores=cores)
        finally:
            self._free.put(cores)


def _ray(**kwargs) -> Executor:
    from .ray_executor import RayExecutor  # when asked for: Ray is an optional extra

    return RayExecutor(**kwargs)


# name -> a class or factory taking the executor's keyword arguments
EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": _ray}


def parallel(executor: Executor, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``fn`` over ``items``, ``executor.slots`` at a time, results in order as they come.

    For work that runs several jobs in a row (a candidate's training, then its
    analysis): the jobs themselves still go through ``executor``. The first
    exception, or the caller stopping early, cancels the executor, so the other
    items' jobs end at once instead of running to completion.
    """
    with ThreadPoolExecutor(max_workers=executor.slots, thread_name_prefix="candidate") as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in futures:
                yield future.result()
        except BaseException:
            executor.cancel()  # before the pool waits for the other items to end
            raise
