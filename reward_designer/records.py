"""What a run keeps in run.json: its config, each candidate's record, the run's state.

Plain pydantic models, read back on resume (and by `report` and `bench`), so
they import nothing heavy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import UserError
from .schemas import FitnessSpec, Sim, TaskSpec


class RunError(UserError):
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


# What analysis.json keeps: a trained policy's measures, as the designer and the report read them.
AGAINST = -0.2  # a reward-fitness correlation over steps below this: the reward pays against the task


class ComponentStat(BaseModel):
    name: str
    mean: float  # per step, over every step of the evaluation episodes
    thirds: list[float]  # the same over the first, middle and last third of each episode's steps


class Analysis(BaseModel):
    ok: bool
    error: str = ""
    episodes: int = 0
    fitness: list[float] = []
    fitness_mean: float | None = None  # None: not measured
    fitness_std: float = 0.0
    length_mean: float = 0.0
    terminated: int = 0
    env_return_mean: float = 0.0
    reward_mean: float = 0.0
    reward_nonfinite: int = 0  # evaluation steps where the reward was NaN or infinite
    step_correlation: float | None = None  # reward vs fitness, per step; None where either is constant
    components: list[ComponentStat] = []
    training_curve: list[dict] = []  # a few rows of the training log (fitness, components over steps)
    trained_steps: int | None = None  # env steps of the training (its log's last row)
    # Over the first and the last third of the training log: the reward per step, the fitness per episode.
    train_reward: list[float] = []
    train_fitness: list[float] = []
    # Why reward hacking is suspected ([] where it is not): over training the reward rose while the
    # fitness did not; over the evaluation steps the reward falls where the fitness rises.
    hacking: list[Literal["rose_alone", "against"]] = []
    # Terminated episodes per termination check that fired at their last step (the card's cause texts);
    # empty where the env's checks are not known.
    termination_causes: dict[str, int] = {}
    feedback: str = ""  # the LLM's failure analysis and suggestions, when asked
    reflection: str = ""  # the numbers, as the designer reads them

    @property
    def step_correlation_text(self) -> str:
        return "undefined (one of them is constant)" if self.step_correlation is None else f"{self.step_correlation:.2f}"

    @property
    def hacking_suspect(self) -> bool:
        return bool(self.hacking)
