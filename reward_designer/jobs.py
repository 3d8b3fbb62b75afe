"""Run one worker job in the sandbox and read back its validated result."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from pydantic import BaseModel

from .numerics import numerics_pins
from .sandbox import Limits, Outcome, read_output, run_worker, sanitize_workdir
from .schemas import Job, JobEnvelope, Result, ResultEnvelope


class JobOutcome(BaseModel):
    result: Result | None = None
    sandbox: Outcome
    problem: str = ""  # why there is no result: timeout, a signal, a forged or missing result

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok


def describe_death(outcome: Outcome) -> str:
    if outcome.limit or outcome.signal:  # the sandbox knows which limit or signal ended it
        return f"the worker was stopped: {outcome.detail}"
    tail = outcome.stderr_tail.strip().splitlines()[-3:]
    return f"the worker exited with code {outcome.returncode}" + (": " + " | ".join(tail) if tail else "")


def read_result(workdir: Path) -> Result:
    """The validated result a worker left in ``workdir``; raises ValueError or OSError if there is none."""
    # Safely: on resume, a worker's folder may not have been sanitized (the parent was killed first).
    return ResultEnvelope.model_validate_json(read_output(workdir / "result.json")).result


def run_job(
    job: Job,
    workdir: Path,
    limits: Limits,
    poll: Callable[[], None] | None = None,
    require_sandbox: bool = False,
    read_only: Iterable[Path] = (),
    cores: list[int] | None = None,
) -> JobOutcome:
    """Run ``job`` confined to ``workdir``; ``read_only``: further folders or files it may read;
    ``cores``: the CPUs it may use (its simulator and learner size themselves to them)."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sanitize_workdir(workdir)  # links an earlier worker left, if its parent was killed before it could
    (workdir / "result.json").unlink(missing_ok=True)
    job_file = workdir / "job.json"
    job_file.write_text(JobEnvelope(job=job, cores=cores or []).model_dump_json(indent=1))
    outcome = run_worker(job_file, workdir, limits, poll=poll, require=require_sandbox, read_only=read_only,
                         extra_env=numerics_pins())  # a seed trains the same whatever x86-64 CPU runs it
    result_file = workdir / "result.json"
    if outcome.returncode != 0 or not result_file.is_file():
        return JobOutcome(sandbox=outcome, problem=describe_death(outcome))
    try:
        result = read_result(workdir)
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        return JobOutcome(sandbox=outcome, problem=f"the worker's result is malformed: {str(exc).splitlines()[0]}")
    if result.kind != job.kind:
        return JobOutcome(sandbox=outcome, problem=f"the worker returned a {result.kind} result for a {job.kind} job")
    return JobOutcome(result=result, sandbox=outcome)
