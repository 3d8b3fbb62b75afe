"""Batch runs: methods x task cards x seeds, every training through the CandidatePipeline, resumable.

    DIR/results.json                 the batch: its config, every scoring training, each design search
    DIR/results.csv, results.md      every training; the tables (`bench --report` writes them again)
    DIR/fitness.png, profile.png     per-task fitness by method; the performance profile
    DIR/designed/<task>/             the `designed` method's design search (a run folder, as `design` makes)
    DIR/trainings/<task>/<method>/seed_<s>-<key>/
                                     one scoring training (a CandidateFolder); <key> hashes the reward's
                                     code and the budget, so a changed card trains afresh
    DIR/.lock                        held by the process running the batch

The methods:
    designed  the design loop at the batch's iterations and samples (its own seed, DESIGN_SEED), then its
              best program trained again on each of the batch's seeds for the score, as Eureka does: the
              score of a search is never the lucky training that won its selection
    expert    the card's expert reward: a program beside the card, or the env's own reward
    sparse    the fitness's per-step value alone as the reward (the card's fitness, wrapped)
    env       the env's own reward, where the card's expert is another program
    random    an untrained policy, the floor: PPO's initial network for the seed, no update, evaluated
              as every other policy is (deterministic, its mean action: near zero at PPO's initialisation)

Resuming is running again: a training whose policy and analysis are in its folder is read back, one
that failed or was cut short runs again, and a design search goes on where it stopped. One failing
task, method or training is recorded and the batch goes on.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import math
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Iterable, Literal, NamedTuple

from pydantic import BaseModel, Field, ValidationError
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from .analyzer import Analyzer
from .critic import Critic
from .executor import EXECUTORS, Cancelled, Executor, parallel
from .pipeline import CandidatePipeline
from .program import RewardProgram
from .records import CandidateRecord, RunConfig, RunError
from .runfolder import CandidateFolder, RunFolder, now, write_atomic
from .schemas import ResultEnvelope, TaskSpec, TrainResult
from .scores import EXPERT, SPARSE, Scores, score
from .tasks import EXPERT_ENV, TaskError, expert_code, load_task, resolve_cards, suite_cards
from .trainer import Trainer, check_trainable

Method = Literal["designed", "expert", "sparse", "env", "random"]
METHODS: tuple[str, ...] = ("designed", "expert", "sparse", "env", "random")
DESIGN_SEED = 1000  # the design search's seed: never one of the seeds its program is scored on
RESULTS = "results.json"

# The sparse method's reward: the card's fitness (trusted card code, still run only in workers), step by step.
SPARSE_REWARD = '''

def compute_reward(state, action):
    value = compute_fitness(state, action).float()
    return value, {"fitness": value}
'''


class BenchConfig(BaseModel):
    tasks: list[str]  # card names, or absolute paths to card files
    methods: list[Method]
    seeds: list[int] = Field(min_length=1)
    model: str | None = None
    api_base: str | None = None
    replay: str | None = None  # recorded replies served to the design searches instead of a live LLM
    iterations: int = Field(default=3, ge=1)
    samples: int = Field(default=4, ge=1)
    fix_attempts: int = Field(default=2, ge=0)
    episodes: int = Field(default=5, ge=1)  # evaluation episodes per trained policy
    workers: int = Field(default=1, ge=1)  # trainings at once (the executor's slots)
    device: str = "cpu"
    executor: str = "local"  # executor.EXECUTORS
    address: str | None = None  # the Ray cluster's (executor "ray")
    require_sandbox: bool = False
    prices: tuple[float, float] | None = None  # USD per 1M prompt / completion tokens


TrainingStatus = Literal["trained", "rejected", "failed", "contained", "error"]


class Training(BaseModel):
    """One scoring training: a method's reward on a task, one seed, and what its policy scored."""

    task: str
    method: Method
    seed: int
    # trained: measured; rejected: the critic refused the program; failed / contained: the training or its
    # analysis failed, or the sandbox stopped it; error: it could not be made (no expert, a failed search)
    status: TrainingStatus
    fitness: float | None = None  # mean over the evaluation episodes
    fitness_std: float | None = None  # over the evaluation episodes
    steps: int | None = None
    seconds: float | None = None  # training time
    code_hash: str = ""  # RewardProgram.id of the reward it trained on ('' for none)
    folder: str = ""  # its CandidateFolder, relative to the batch's folder
    error: str = ""


class Design(BaseModel):
    """The designed method's search on one task: how it ended, its winner, what its LLM calls cost."""

    task: str
    status: Literal["done", "failed", "stopped", "error"]
    folder: str
    best: str | None = None  # the winning candidate's name
    search_fitness: float | None = None  # the winner's own training: selected, so biased upwards
    code_hash: str = ""
    usage: dict = {}  # tokens and cost (RunRecord.usage)
    error: str = ""


class BenchResults(BaseModel):
    version: int = 1
    config: BenchConfig
    created: str = ""
    updated: str = ""
    trainings: list[Training] = []
    designs: list[Design] = []

    def task_names(self) -> list[str]:
        """The cards' names, in the batch's order (results are kept by name)."""
        names = list(dict.fromkeys([t.task for t in self.trainings] + [d.task for d in self.designs]))
        return names

    def runs(self) -> dict[tuple[str, str], dict[int, float]]:
        out: dict[tuple[str, str], dict[int, float]] = {}
        for t in self.trainings:
            if t.status == "trained" and t.fitness is not None:
                out.setdefault((t.task, t.method), {})[t.seed] = t.fitness
        return out

    def scores(self) -> Scores:
        cfg = self.config
        return score(self.runs(), self.task_names(), list(cfg.methods), list(cfg.seeds))


class Unit(NamedTuple):
    """One scoring training to run: the reward's code (None: the env's own) or why there is none."""

    task: str
    method: str
    seed: int
    code: str | None = None
    error: str = ""


def check_report_extras() -> None:
    """RunError unless the report's libraries are here: found before any training is spent."""
    missing = [m for m in ("rliable", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise RunError(f"bench needs {' and '.join(missing)}: pip install 'reward-designer[bench]'")


def training_key(spec: TaskSpec, code: str | None, episodes: int, device: str) -> str:
    """What a scoring training's result depends on besides its seed: the code and the budget."""
    budget = {"code": code, "env_id": spec.env_id, "env_kwargs": spec.env_kwargs, "train_steps": spec.train_steps,
              "ppo": spec.ppo, "fitness": spec.fitness.model_dump() if spec.fitness else None,
              "episodes": episodes, "device": device}
    return hashlib.sha256(json.dumps(budget, sort_keys=True).encode()).hexdigest()[:12]


def load_results(folder: str | Path) -> BenchResults:
    path = Path(folder) / RESULTS
    if not path.is_file():
        raise RunError(f"no batch in {folder} (no {RESULTS})")
    try:
        return BenchResults.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "the results"
        raise RunError(f"{path} is damaged or from an incompatible version: {where}: {e['msg']}") from None


class _Watched:
    """An executor seen through a design search: its cancel stops that search's jobs only (a failed search
    never stops the batch), and each training that ends is counted for the batch's progress."""

    def __init__(self, inner: Executor, on_train: Callable[[], None]):
        self.inner, self.on_train, self.slots = inner, on_train, inner.slots
        self._cancelled = threading.Event()

    def submit(self, job, workdir, limits, *, poll=None, read_only=()) -> Future:
        self.raise_if_cancelled()

        def watched() -> None:
            self.raise_if_cancelled()
            if poll is not None:
                poll()

        future = self.inner.submit(job, workdir, limits, poll=watched, read_only=read_only)
        if job.kind == "train":
            future.add_done_callback(lambda _: self.on_train())
        return future

    def run(self, job, workdir, limits, *, poll=None, read_only=()):
        return self.submit(job, workdir, limits, poll=poll, read_only=read_only).result()

    def cancel(self) -> None:
        self._cancelled.set()

    def raise_if_cancelled(self) -> None:
        self.inner.raise_if_cancelled()
        if self._cancelled.is_set():
            raise Cancelled("stopped")


def make_executor(config: BenchConfig) -> Executor:
    if config.executor not in EXECUTORS:
        raise RunError(f"unknown executor {config.executor!r}; known: {', '.join(sorted(EXECUTORS))}")
    kwargs = {"slots": config.workers, "require_sandbox": config.require_sandbox}
    if config.address is not None:
        kwargs["address"] = config.address
    try:
        return EXECUTORS[config.executor](**kwargs)
    except (ConnectionError, ImportError, RuntimeError, ValueError) as exc:  # no cluster at --address, no Ray
        raise RunError(f"executor {config.executor}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None


class Bench:
    """A batch in a folder: ``Bench.create(folder, config).execute()``, later ``Bench.open(folder).execute()``."""

    def __init__(self, folder: Path, results: BenchResults, executor: Executor | None = None,
                 console: Console | None = None):
        self.path = Path(folder).resolve()
        self.results = results
        self.executor = executor
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self.specs: dict[str, TaskSpec] = {}  # by card name, in the batch's order
        self.refs: dict[str, str] = {}  # where each card is (a name, or a path)
        for ref in results.config.tasks:
            spec = load_task(ref)
            self.specs[spec.name], self.refs[spec.name] = spec, ref

    @classmethod
    def create(cls, folder: Path, config: BenchConfig, executor: Executor | None = None,
               console: Console | None = None) -> "Bench":
        """A new batch, once every card loads with a fitness and every env is trainable."""
        if (Path(folder) / RESULTS).exists():
            raise RunError(f"{folder} already holds a batch; continue it with `reward-designer bench --resume {folder}`")
        check_report_extras()
        if "designed" in config.methods and config.model is None and config.replay is None:
            raise RunError("the designed method needs a model: pass --model or set REWARD_DESIGNER_MODEL")
        if config.address is not None and config.executor == "local":
            raise RunError("--address is the Ray cluster's: use it with --executor ray")
        if config.executor == "ray" and importlib.util.find_spec("ray") is None:
            raise RunError("--executor ray needs Ray: pip install 'reward-designer[ray]'")
        config.tasks = [str(Path(r).resolve()) if Path(r).suffix in (".yaml", ".yml") and Path(r).is_file() else r
                        for r in resolve_cards(config.tasks)]  # paths absolute: a resume may start elsewhere
        for ref in config.tasks:
            spec = load_task(ref)
            if spec.fitness is None:
                raise TaskError(f"{ref}: the card has no fitness; a batch scores every method on the card's")
            try:
                check_trainable(spec.env_id, spec.env_kwargs)
            except ValueError as exc:
                raise RunError(f"{spec.name}: {exc}") from None
        bench = cls(folder, BenchResults(config=config, created=now()), executor, console)
        bench.save()
        return bench

    @classmethod
    def open(cls, folder: Path, executor: Executor | None = None, console: Console | None = None) -> "Bench":
        return cls(folder, load_results(folder), executor, console)

    @property
    def config(self) -> BenchConfig:
        return self.results.config

    def save(self) -> None:
        order = {name: i for i, name in enumerate(self.specs)}
        with self._lock:
            self.results.trainings.sort(key=lambda t: (order.get(t.task, 0), METHODS.index(t.method), t.seed))
            self.results.designs.sort(key=lambda d: order.get(d.task, 0))
            self.results.updated = now()
            write_atomic(self.path / RESULTS, self.results.model_dump_json(indent=1))

    # ------------------------------------------------------------------ the batch
    def execute(self, quiet: bool = False) -> BenchResults:
        """Run (or go on with) the batch, then write its report. An interruption cancels the jobs in
        flight, keeps every finished training, and is raised on: ``Bench.open(folder).execute()`` goes on."""
        with RunFolder(self.path).exclusive():
            self.executor = self.executor or make_executor(self.config)
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("eta"), TimeRemainingColumn()]
            with Progress(*columns, console=self.console, disable=quiet) as bars:
                self._bars = bars
                self._bar = bars.add_task("trainings", total=self._planned(), completed=self._done_before())
                try:
                    self._score_all(self._baseline_units())
                    if "designed" in self.config.methods:
                        for task in self.specs:
                            self._score_all(self._designed_units(task))
                except BaseException:
                    self.executor.cancel()
                    raise
                finally:
                    self.save()
        bench_report(self.path, self.console if not quiet else None)
        return self.results

    def _planned(self) -> int:
        """Every training of the batch: the scoring ones, and each design search's candidates at most."""
        per_design = self.config.iterations * self.config.samples if "designed" in self.config.methods else 0
        return len(self.specs) * per_design + sum(len(self.config.seeds) for task in self.specs
                                                   for m in self._methods(task))

    def _done_before(self) -> int:
        """Trainings an earlier session finished (so the estimate of the time left counts only this one's)."""
        done = sum(1 for t in self.results.trainings if t.status == "trained")
        for d in self.results.designs:
            if d.status == "done":
                done += self.config.iterations * self.config.samples
        return done

    def _advance(self) -> None:
        self._bars.advance(self._bar)

    def _methods(self, task: str) -> list[str]:
        """The methods run on ``task``: env only where the expert is another program."""
        return [m for m in self.config.methods if not (m == "env" and self.specs[task].expert == EXPERT_ENV)]

    def _baseline_units(self) -> list[Unit]:
        units = []
        for task, spec in self.specs.items():
            for method in self._methods(task):
                if method == "designed":
                    continue
                code, error = None, ""
                if method == "expert":
                    try:
                        code = expert_code(self.refs[task])
                    except TaskError as exc:
                        error = str(exc)
                elif method == "sparse":
                    code = spec.fitness.code + SPARSE_REWARD
                units += [Unit(task, method, seed, code, error) for seed in self.config.seeds]
        return units

    def _designed_units(self, task: str) -> list[Unit]:
        design, code = self._design(task)
        error = "" if code is not None else f"the design search ended {design.status}: {design.error}"
        return [Unit(task, "designed", seed, code, error) for seed in self.config.seeds]

    def _score_all(self, units: Iterable[Unit]) -> None:
        for training in parallel(self.executor, self._score, list(units)):
            with self._lock:
                self.results.trainings = [t for t in self.results.trainings
                                          if (t.task, t.method, t.seed) != (training.task, training.method, training.seed)]
                self.results.trainings.append(training)
            self.save()

    # ------------------------------------------------------------------ one training
    def candidate(self, unit: Unit) -> CandidateFolder:
        key = training_key(self.specs[unit.task], unit.code, self.config.episodes, self.config.device)
        return CandidateFolder(self.path / "trainings" / unit.task / unit.method / f"seed_{unit.seed}-{key}")

    def _score(self, unit: Unit) -> Training:
        """One scoring training; whatever goes wrong is its record's error, except a stop."""
        cand = self.candidate(unit)
        base = dict(task=unit.task, method=unit.method, seed=unit.seed,
                    code_hash=RewardProgram(code=unit.code).id if unit.code is not None else "",
                    folder=str(cand.path.relative_to(self.path)))
        try:
            if unit.error:
                return Training(**base, status="error", error=unit.error)
            rec = self._pipeline_run(unit, cand)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - one training's failure is recorded; the batch goes on
            self.executor.raise_if_cancelled()  # ... unless the batch is stopping
            return Training(**base, status="error", error=f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            self._advance()
        analysis = CandidatePipeline.analysis(cand) if rec.status == "trained" else None
        return Training(**base, status=rec.status, fitness=rec.fitness,
                        fitness_std=analysis.fitness_std if analysis is not None else None,
                        steps=rec.steps, seconds=rec.train_seconds,
                        error=rec.note() if rec.status != "trained" else rec.error)

    def _pipeline_run(self, unit: Unit, cand: CandidateFolder) -> CandidateRecord:
        spec, cfg, ex = self.specs[unit.task], self.config, self.executor
        pipeline = CandidatePipeline(
            Critic(spec.env_id, spec.env_kwargs, seed=unit.seed, executor=ex),
            Trainer(spec.env_id, spec.train_steps, spec.env_kwargs, seed=unit.seed, device=cfg.device, ppo=spec.ppo,
                    executor=ex),
            Analyzer(spec.env_id, spec.fitness, spec.env_kwargs, episodes=cfg.episodes, executor=ex),
            stop=ex.raise_if_cancelled)
        if unit.method == "random" and cand.finished_training() is None:
            untrained_policy(spec, unit.seed, cfg.device, cand)
        if unit.code is None:
            return pipeline.train_and_analyze(cand, RewardProgram(code=None))
        return pipeline.run(cand, RewardProgram(code=unit.code))

    # ------------------------------------------------------------------ the designed method's search
    def _design(self, task: str) -> tuple[Design, str | None]:
        """The search on ``task`` (run, resumed, or read back when done) and its winning program."""
        from .run import Run

        cfg, spec = self.config, self.specs[task]
        folder = self.path / "designed" / task
        counted = [0]

        def on_train() -> None:
            counted[0] += 1
            self._advance()

        watched = _Watched(self.executor, on_train)
        design = Design(task=task, status="error", folder=str(folder.relative_to(self.path)))
        record = None
        try:
            if RunFolder(folder).exists():
                run = Run.open(folder, console=self.console, executor=watched)
                record = run.record if run.record.status == "done" else run.execute(quiet=True)
            else:
                config = RunConfig(task=spec, model=cfg.model, api_base=cfg.api_base, replay=cfg.replay,
                                   iterations=cfg.iterations, samples=cfg.samples, train_steps=spec.train_steps,
                                   seed=DESIGN_SEED, device=cfg.device, workers=cfg.workers,
                                   fix_attempts=cfg.fix_attempts, episodes=cfg.episodes,
                                   require_sandbox=cfg.require_sandbox, prices=cfg.prices)
                record = Run.create(folder, config, console=self.console, executor=watched).execute(quiet=True)
        except Exception as exc:  # noqa: BLE001 - a failed search is this task's; the batch goes on
            self.executor.raise_if_cancelled()
            design.error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if RunFolder(folder).exists():
                record = RunFolder(folder).read_record()
        if record is not None:
            design.status, design.usage = record.status, record.usage
            design.error = record.error or design.error
        code = None
        if record is not None and record.status == "done" and record.best is not None:
            design.best, design.search_fitness = record.best.name, record.best.fitness
            code = (RunFolder(folder).best / "reward.py").read_text()
            design.code_hash = RewardProgram(code=code).id
        planned = cfg.iterations * cfg.samples
        if design.status == "done" and not any(d.task == task and d.status == "done" for d in self.results.designs):
            self._bars.advance(self._bar, max(0, planned - counted[0]))  # rejected candidates never train
        with self._lock:
            self.results.designs = [d for d in self.results.designs if d.task != task] + [design]
        self.save()
        return design, code


def untrained_policy(spec: TaskSpec, seed: int, device: str, cand: CandidateFolder) -> None:
    """The random method's policy: PPO's initial network for ``seed`` (what every training starts from),
    saved with a result saying it trained 0 steps. Our own code, no reward program: made here."""
    import gymnasium as gym

    from .algorithms import DEFAULT, get_algorithm
    from .ppo import make_policy

    cfg = get_algorithm(DEFAULT).make_config(spec.env_id, "mujoco", spec.ppo, total_steps=spec.train_steps,
                                             seed=seed, device="cpu")
    env = gym.make(spec.env_id, **spec.env_kwargs)
    try:
        policy = make_policy(env, cfg)
    finally:
        env.close()
    cand.train.mkdir(parents=True, exist_ok=True)
    policy.save(cand.policy)
    result = TrainResult(ok=True, steps=0, seconds=0.0, steps_per_second=0.0, policy=str(cand.policy),
                         ppo=cfg.to_dict())
    write_atomic(cand.train / "result.json", ResultEnvelope(result=result).model_dump_json())


# ---------------------------------------------------------------------- the Python API
def run_bench(out: str | Path, *, suite: str | None = None, tasks: str | list[str] | None = None,
              methods: str | list[str] = ("designed", "expert", "sparse", "random"), seeds: int = 3,
              executor: Executor | None = None, quiet: bool = True, console: Console | None = None,
              **config) -> BenchResults:
    """A batch over a suite's cards (``suite``) or a list of cards (``tasks``: names or YAML paths) into the
    folder ``out``; ``config``: BenchConfig's other fields (model, iterations, samples, workers, ...).
    ``executor``: where its jobs run (default: ``config['executor']``'s, local workers)."""
    if (suite is None) == (tasks is None):
        raise RunError("give a suite or a list of task cards, not both or neither")
    refs = suite_cards(suite) if suite is not None else resolve_cards(tasks)
    cfg = BenchConfig(tasks=refs, methods=parse_methods(methods), seeds=list(range(seeds)), **config)
    return Bench.create(out, cfg, executor, console).execute(quiet=quiet)


def parse_methods(methods: str | Iterable[str]) -> list[str]:
    """``"designed,expert"`` or a list -> the methods, checked, each once; RunError naming an unknown one."""
    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise RunError(f"unknown method {', '.join(unknown) or '(none given)'}; the methods: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def resume_bench(out: str | Path, *, executor: Executor | None = None, quiet: bool = True,
                 console: Console | None = None) -> BenchResults:
    """Go on with the batch in ``out``: no finished training is redone."""
    return Bench.open(out, executor, console).execute(quiet=quiet)


# ---------------------------------------------------------------------- the report
def bench_report(out: str | Path, console: Console | None = None) -> Scores:
    """Write results.csv, results.md, fitness.png and profile.png from ``out``'s results.json; print the
    tables on ``console`` (None: print nothing). Returns the scores the tables show."""
    check_report_extras()
    folder = Path(out)
    results = load_results(folder)
    scores = results.scores()
    write_atomic(folder / "results.csv", results_csv(results))
    write_atomic(folder / "results.md", results_markdown(results, scores))
    plot_fitness(results, scores, folder / "fitness.png")
    plot_profile(scores, folder / "profile.png")
    if console is not None:
        for table in tables(results, scores):
            console.print(table)
        if results.config.replay and "designed" in results.config.methods:
            console.print(REPLAY_NOTE.format(replay=results.config.replay), markup=False)
    return scores


REPLAY_NOTE = ("note: the design searches were served recorded replies ({replay}), not a live model's: "
               "their scores say nothing of any LLM")


def _fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _cell(results: BenchResults, scores: Scores, task: str, method: str) -> str:
    row = next((r for r in scores.per_task if r.task == task and r.method == method), None)
    failed = sum(1 for t in results.trainings if t.task == task and t.method == method and t.status != "trained")
    if row is None or (row.runs == 0 and not failed):
        return ""
    text = f"{row.fitness_mean:.3f} ±{row.fitness_std:.3f}" if row.runs else "-"
    return text + (f" ({failed} failed)" if failed else "")


def table_rows(results: BenchResults, scores: Scores) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """The per-task table and the aggregates' table, as text cells (the terminal and results.md show both)."""
    methods = list(results.config.methods)
    scored = [m for m in methods if m not in (SPARSE, EXPERT)]
    head = ["task", *methods, *[f"{m} normalized" for m in scored]]
    rows = []
    for task in results.task_names():
        norm = {r.method: r.normalized for r in scores.per_task if r.task == task}
        rows.append([task, *[_cell(results, scores, task, m) for m in methods], *[_fmt(norm.get(m), 2) for m in scored]])
    agg_head = ["method", "tasks", "mean [95% CI]", "median [95% CI]", "IQM [95% CI]", "at or above expert"]
    agg_rows = [[a.method, str(a.tasks), f"{_fmt(a.mean, 2)} {_ci(a.mean_ci)}", f"{_fmt(a.median, 2)} {_ci(a.median_ci)}",
                 f"{_fmt(a.iqm, 2)} {_ci(a.iqm_ci)}",
                 "" if a.at_or_above_expert is None else f"{a.at_or_above_expert:.0%} of {a.compared}"]
                for a in scores.aggregates if a.method != SPARSE]
    return head, rows, agg_head, agg_rows


def _usage_rows(results: BenchResults) -> list[list[str]]:
    rows = []
    for d in results.designs:
        u = d.usage
        cost = u.get("cost_usd") or 0.0
        cost_text = "unknown" if u.get("unknown_cost_calls") and not cost else f"${cost:.4f}"
        rows.append([d.task, d.status, d.best or "", _fmt(d.search_fitness),
                     f"{u.get('prompt_tokens', 0)}+{u.get('completion_tokens', 0)}", cost_text, d.error[:80]])
    return rows


USAGE_HEAD = ["task", "search", "winner", "winner's own fitness", "tokens (prompt+completion)", "cost", "note"]


def tables(results: BenchResults, scores: Scores) -> list[Table]:
    head, rows, agg_head, agg_rows = table_rows(results, scores)
    out = []
    for title, h, rs in (("fitness per task: mean ± std over seeds; normalized (x - sparse) / |expert - sparse|", head, rows),
                         ("normalized score over tasks (each clipped to [0, 3])", agg_head, agg_rows),
                         ("design searches", USAGE_HEAD, _usage_rows(results))):
        if not rs:
            continue
        table = Table(title=title)
        for i, col in enumerate(h):
            # The task's or method's name whole; numbers folded, never cut to an ellipsis, in a narrow terminal.
            table.add_column(col, no_wrap=i == 0, overflow="fold")
        for r in rs:
            table.add_row(*r)
        out.append(table)
    return out


def results_csv(results: BenchResults) -> str:
    buf = io.StringIO()
    fields = list(Training.model_fields)
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for t in results.trainings:
        writer.writerow(t.model_dump())
    return buf.getvalue()


def _markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def results_markdown(results: BenchResults, scores: Scores) -> str:
    cfg = results.config
    head, rows, agg_head, agg_rows = table_rows(results, scores)
    designer = "" if "designed" not in cfg.methods else (
        f"; designer {cfg.model or 'replayed replies'}: iterations {cfg.iterations}, samples {cfg.samples}")
    parts = [
        "# Benchmark results",
        f"Methods {', '.join(cfg.methods)}; seeds {', '.join(map(str, cfg.seeds))}; {cfg.episodes} evaluation "
        f"episodes per policy{designer}. Updated {results.updated}.",
        "Fitness per task: mean ± std over seeds. Normalized: (method - sparse) / |expert - sparse| on the "
        "fitness means (Eureka's human-normalized score, the card's expert reward in the human's place; blank where "
        "an anchor is missing or the two score the same).",
        _markdown_table(head, rows),
        "## Over tasks",
        "Each task's normalized score per seed, clipped to [0, 3]; 95% stratified-bootstrap confidence intervals "
        "(rliable). At or above expert: the share of tasks whose fitness mean is at least the expert's.",
        _markdown_table(agg_head, agg_rows),
    ]
    if results.designs:
        parts += ["## Design searches", _markdown_table(USAGE_HEAD, _usage_rows(results))]
    if cfg.replay and "designed" in cfg.methods:
        note = REPLAY_NOTE.format(replay=cfg.replay)
        parts.append(note[0].upper() + note[1:] + ".")
    failed = [t for t in results.trainings if t.status != "trained"]
    if failed:
        parts += ["## Trainings that did not finish",
                  _markdown_table(["task", "method", "seed", "status", "error"],
                                  [[t.task, t.method, str(t.seed), t.status, t.error.strip().splitlines()[-1][:200]
                                    if t.error.strip() else ""] for t in failed])]
    parts.append("![fitness per task](fitness.png)\n\n![performance profile](profile.png)")
    return "\n\n".join(parts) + "\n"


def plot_fitness(results: BenchResults, scores: Scores, path: Path) -> None:
    """One panel per task (their fitness scales differ): each method's mean with its std over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks, methods = results.task_names(), list(results.config.methods)
    cols = min(4, max(1, len(tasks)))
    rows = max(1, -(-len(tasks) // cols))
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(rows, cols, i + 1)
        cells = [next((r for r in scores.per_task if r.task == task and r.method == m), None) for m in methods]
        # A method with no finished training on the task has no bar (NaN draws nothing), not a bar at 0.
        means = [c.fitness_mean if c and c.fitness_mean is not None else math.nan for c in cells]
        stds = [c.fitness_std if c and c.fitness_std is not None else math.nan for c in cells]
        ax.bar(range(len(methods)), means, yerr=stds, capsize=3, color=[f"C{j}" for j in range(len(methods))])
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
        ax.set_title(task, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.savefig(path, dpi=110)


def plot_profile(scores: Scores, path: Path) -> None:
    """The share of runs (seed x task) whose normalized score exceeds each threshold, per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for j, (method, share) in enumerate(scores.profile.share.items()):
        ax.plot(scores.profile.taus, share, label=method, color=f"C{j}")
    ax.set_xlabel("normalized score τ (clipped to [0, 3])")
    ax.set_ylabel("share of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    if scores.profile.share:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no task has both anchors (sparse, expert)", ha="center", transform=ax.transAxes)
    fig.savefig(path, dpi=110)
