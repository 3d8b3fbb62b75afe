"""What a run keeps in run.json: its config, each candidate's record, the run's state.

Plain pydantic models, read back on resume (and by `report` and `bench`), so
they import nothing heavy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .schemas import FitnessSpec, Sim, TaskSpec


class RunError(Exception):
    """The run cannot go on (one line, fit for a user)."""


class RunConfig(BaseModel):
    task: TaskSpec
    model: str | None = None
    api_base: str | None = None
    replay: str | None = None  # a file of recorded replies served instead of a live LLM
    iterations: int = Field(default=3, ge=1)
    samples: int = Field(default=4, ge=1)
    train_steps: int = Field(default=1_000_000, gt=0)
    seed: int = 0
    device: str = "cpu"
    sim: Sim = "mujoco"
    workers: int = Field(default=1, ge=1)  # sandboxed trainings at once (the executor's slots)
    fix_attempts: int = Field(default=2, ge=0)
    llm_critic: bool = False
    llm_analysis: bool = True
    episodes: int = Field(default=5, ge=1)
    require_sandbox: bool = False
    ppo: dict = {}  # PPOConfig overrides, over the task's (TaskSpec.ppo)
    prices: tuple[float, float] | None = None  # USD per 1M prompt / completion tokens
    selector: str = "best-fitness"  # selection.SELECTORS: which candidate is the best
    allocation: str = "full"  # selection.ALLOCATIONS: how a round's training budget is spent
    videos: bool = False  # film each round's best policy as the run goes (RUN/iter_XX/cand_YY/video.mp4)
    judge: str | None = None  # a litellm vision model shown stills of each round's best (feedback, never fitness)
    judge_api_base: str | None = None  # the judge's server, when not the provider's own


# culled: the round's allocation stopped its training early (selection.py), its fitness measured there
CandidateStatus = Literal["rejected", "failed", "contained", "trained", "culled"]


class CandidateRecord(BaseModel):
    """One program's way through the pipeline: where it stopped, and what it scored."""

    iteration: int
    index: int
    # contained: the sandbox stopped it (a resource limit, a forbidden system call)
    status: CandidateStatus
    stage: str = ""  # where the critic stopped it
    findings: list[str] = []
    fixes: int = 0
    parent: str | None = None  # the candidate whose program this one refines
    fitness: float | None = None
    correlation: float | None = None
    hacking: list[str] = []  # why the analyzer suspects the reward is gamed (Analysis.hacking)
    steps: int | None = None  # env steps trained
    steps_per_second: float | None = None
    train_seconds: float | None = None
    budget: float | None = None  # culled: the fraction of the training budget it had (steps of planned)
    error: str = ""

    @property
    def name(self) -> str:
        return candidate_name(self.iteration, self.index)

    @property
    def key(self) -> tuple[int, int]:
        return self.iteration, self.index

    def note(self) -> str:
        """One line on how it ended: the error's last line, else each finding's (a traceback's last
        line is the error itself)."""
        if self.status == "culled" and self.budget is not None and self.fitness is not None:
            return f"stopped at {self.budget:.0%} of the budget, task score {self.fitness:.3g}"
        if self.error.strip():
            return self.error.strip().splitlines()[-1]
        return "; ".join(f.strip().splitlines()[-1] for f in self.findings if f.strip())


def candidate_name(iteration: int, index: int) -> str:
    """A candidate's name in a run, which is also its folder: ``iter_01/cand_02``."""
    return f"iter_{iteration:02d}/cand_{index:02d}"


def edit_name(iteration: int) -> str:
    """The folder of a round's hand-edited program (``refine --edit``): ``iter_03/edit``."""
    return f"iter_{iteration:02d}/edit"


class Feedback(BaseModel):
    """A person's word on a run (``refine``): the round it steers, and the program that round refines."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)  # run.json says "from"

    round: int = Field(ge=1)
    text: str = ""
    from_: str | None = Field(default=None, alias="from")  # the candidate it starts from; None: the best so far
    edit: str | None = None  # the hand-edited program's folder (edit_name), the round's parent
    created: str = ""


class RunRecord(BaseModel):
    version: int = 1
    config: RunConfig
    status: Literal["running", "stopped", "done", "failed"] = "running"  # stopped: interrupted, or an LLM error
    created: str = ""
    updated: str = ""
    fitness: FitnessSpec | None = None
    candidates: list[CandidateRecord] = []
    best: CandidateRecord | None = None
    usage: dict = {}
    error: str = ""
    feedback: list[Feedback] = []  # refine's rounds, in order: each round's words and edit
