"""Run: the design loop over a run folder, resumable at any point.

Every step leaves its output in the folder before the next one starts (LLM
replies in the response cache, critic reports, training results, analyses),
and every step first looks for its output there. Resuming a run is running it
again: finished steps are read back, so no LLM call is repeated (each call is
cached under its place in the run) and no finished or failed training is
redone; a training killed half-way starts over.

    RUN/run.json                  config, status, candidates, best, tokens and cost
    RUN/.lock                     held by the process running the loop (one at a time)
    RUN/envcard.py, fitness.py    what the designer read; the hidden measure (for review)
    RUN/llm/cache/, calls.jsonl   every LLM reply
    RUN/iter_01/prompt.md         the designer's prompt of that round
    RUN/iter_01/cand_00/          reward.py, attempt_*.py, critic.json, train/ (policy.npz,
                                  progress.jsonl), analysis.json, rollout/, reward_eval/
    RUN/best/                     reward.py, policy.npz, analysis.json of the best candidate
    RUN/warp/kernels/             with sim "warp": MuJoCo Warp's kernels, compiled once for every training
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .analyzer import Analysis, Analyzer
from .critic import Critic, CriticReport
from .designer import Designer
from .envcard import EnvCard
from .jobs import read_result
from .sandbox import copy_output
from .llm import Usage, make_client
from .program import FITNESS_ENTRY, NO_CODE, extract_code, fitness_aggregate, fitness_from_code
from .schemas import FitnessSpec, Sim, TaskSpec, TrainResult
from .templates import render
from .trainer import Trainer, check_trainable

RUN_FILE = "run.json"
LOCK_FILE = ".lock"  # held (flock) while a process runs the loop


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
    workers: int = Field(default=1, ge=1)
    fix_attempts: int = Field(default=2, ge=0)
    llm_critic: bool = False
    llm_analysis: bool = True
    episodes: int = Field(default=5, ge=1)
    require_sandbox: bool = False
    ppo: dict = {}  # PPOConfig overrides, over the task's (TaskSpec.ppo)
    prices: tuple[float, float] | None = None  # USD per 1M prompt / completion tokens


class CandidateRecord(BaseModel):
    iteration: int
    index: int
    # contained: the sandbox stopped it (a resource limit, a forbidden system call)
    status: Literal["rejected", "failed", "contained", "trained"]
    stage: str = ""  # where the critic stopped it
    findings: list[str] = []
    fixes: int = 0
    fitness: float | None = None
    correlation: float | None = None
    steps_per_second: float | None = None
    train_seconds: float | None = None
    error: str = ""

    @property
    def name(self) -> str:
        return f"iter_{self.iteration:02d}/cand_{self.index:02d}"


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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _add_usage(a: dict, b: dict) -> dict:
    return {k: (a.get(k) or 0) + (b.get(k) or 0) for k in set(a) | set(b)}


def _best(candidates: list[CandidateRecord]) -> CandidateRecord | None:
    trained = [c for c in candidates if c.status == "trained" and c.fitness is not None]
    # Ties go to the earlier candidate, so a resumed run picks the same best.
    return max(trained, key=lambda c: (c.fitness, -c.iteration, -c.index), default=None)


class Run:
    """A design run in a folder: ``Run.create(folder, config).execute()``, later ``Run.open(folder).execute()``."""

    def __init__(self, folder: Path, record: RunRecord, console: Console | None = None):
        self.folder, self.record = Path(folder).resolve(), record
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()

    @classmethod
    def create(cls, folder: Path, config: RunConfig, console: Console | None = None) -> "Run":
        """A new run in ``folder``, once the env is found trainable and the LLM reachable."""
        folder = Path(folder)
        if (folder / RUN_FILE).exists():
            raise RunError(f"{folder} already holds a run; continue it with `reward-designer resume {folder}`")
        # Before the folder is made: a bad env, model or API base should leave nothing behind.
        try:
            check_trainable(config.task.env_id, config.task.env_kwargs)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        make_client(config.model, api_base=config.api_base,
                    replay=Path(config.replay) if config.replay else None).check_reachable()
        run = cls(folder, RunRecord(config=config, created=_now()), console)
        try:
            run.save()
        except OSError as exc:
            raise RunError(f"cannot create the run folder {folder}: {exc.strerror or exc}") from None
        return run

    @classmethod
    def open(cls, folder: Path, console: Console | None = None) -> "Run":
        path = Path(folder) / RUN_FILE
        if not path.is_file():
            raise RunError(f"no run in {folder} (no {RUN_FILE})")
        try:
            record = RunRecord.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(x) for x in e["loc"]) or "the record"
            raise RunError(f"{path} is damaged or from an incompatible version: {where}: {e['msg']}") from None
        except OSError as exc:
            raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls(folder, record, console)

    @property
    def config(self) -> RunConfig:
        return self.record.config

    def save(self) -> None:
        with self._lock:
            self.record.updated = _now()
            _write(self.folder / RUN_FILE, self.record.model_dump_json(indent=1))

    # ------------------------------------------------------------------ loop
    def execute(self, quiet: bool = False) -> RunRecord:
        """Run (or go on with) the loop. An interruption or an LLM error leaves the run "stopped",
        its record saved, and is raised on: ``Run.open(folder).execute()`` continues it."""
        with self._exclusive():
            return self._execute(quiet)

    @contextlib.contextmanager
    def _exclusive(self):
        """The run folder to this process alone: two sessions of one run would pay for the same LLM
        calls and write over each other's files. The lock goes with the process, however it ends."""
        with open(self.folder / LOCK_FILE, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                raise RunError(f"{self.folder} is in use by another process (pid {f.read().strip() or '?'})") from None
            f.truncate(0)
            f.write(str(os.getpid()))
            f.flush()
            yield

    def _execute(self, quiet: bool) -> RunRecord:
        self.record.status, self.record.error = "running", ""
        # What earlier sessions spent, from the call log: their last saved totals can miss the
        # calls made after the last candidate was recorded.
        usage_before = Usage.from_log(self.folder / "llm" / "calls.jsonl").model_dump()
        self._usage = lambda: usage_before
        self._stop = threading.Event()
        try:
            return self._loop(quiet)
        except BaseException as exc:
            self.record.status = "stopped"
            self.record.error = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc).splitlines()[0][:300]
            self.record.usage = self._usage()
            self.save()
            raise

    def _loop(self, quiet: bool) -> RunRecord:
        cfg = self.config
        llm = make_client(cfg.model, api_base=cfg.api_base, replay=Path(cfg.replay) if cfg.replay else None,
                          cache_dir=self.folder / "llm" / "cache", log_path=self.folder / "llm" / "calls.jsonl",
                          prices=cfg.prices)
        llm.check_reachable()
        usage_before = self._usage()
        self._usage = lambda: _add_usage(usage_before, llm.usage.model_dump())

        try:
            envcard = EnvCard.from_env(cfg.task.env_id, cfg.task.env_kwargs).render()
        except ValueError as exc:
            raise RunError(str(exc)) from None
        _write(self.folder / "envcard.py", envcard)
        self._critic = Critic(cfg.task.env_id, cfg.task.env_kwargs, llm=llm if cfg.llm_critic else None,
                              task=cfg.task, envcard=envcard, require_sandbox=cfg.require_sandbox, seed=cfg.seed)
        self._trainer = Trainer(cfg.task.env_id, cfg.train_steps, cfg.task.env_kwargs, seed=cfg.seed,
                                device=cfg.device, ppo={**cfg.task.ppo, **cfg.ppo}, require_sandbox=cfg.require_sandbox,
                                sim=cfg.sim, kernel_dir=self.folder / "warp")
        if cfg.sim == "warp" and not quiet:
            self.console.print(f"MuJoCo Warp: compiling the kernels for {cfg.task.env_id} once, for every training")
        try:
            self._trainer.prepare()
        except ValueError as exc:
            raise RunError(str(exc)) from None
        if (note := self._trainer.rounding_note()) and not quiet:
            self.console.print(note, markup=False)
        designer = Designer(llm, cfg.task, envcard)
        fitness = self._fitness(llm, designer)
        self._analyzer = Analyzer(cfg.task.env_id, fitness, cfg.task.env_kwargs, episodes=cfg.episodes,
                                  llm=llm if cfg.llm_analysis else None, task=cfg.task,
                                  require_sandbox=cfg.require_sandbox)

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=self.console, disable=quiet) as bars:
            rounds = bars.add_task("rounds", total=cfg.iterations)
            for it in range(1, cfg.iterations + 1):
                self._round(it, designer, bars)
                bars.advance(rounds)
        self._finish()
        if not quiet:
            self.console.print(self.summary_table())
        return self.record

    def _fitness(self, llm, designer: Designer) -> FitnessSpec:
        """The task's hidden measure: the card's, else one sparse check asked of the LLM once."""
        if self.record.fitness is None:
            fitness = self.config.task.fitness
            if fitness is None:
                fitness = self._fitness_from_llm(llm, designer)
            elif not (report := self._check_fitness(fitness.code, self.folder / "fitness_check")).ok:
                # Before any LLM call: with a broken measure every candidate would fail after training.
                raise RunError("the task's success check (compute_fitness) is unusable: " + report.summary()[:300])
            code = fitness.code
            if fitness_aggregate(code, "") != fitness.aggregate:  # a card's aggregate: so the file scores alike
                code = f'AGGREGATE = "{fitness.aggregate}"\n\n' + code
            _write(self.folder / "fitness.py", code)
            self.record.fitness = fitness
            self.save()
        return self.record.fitness

    def _fitness_from_llm(self, llm, designer: Designer) -> FitnessSpec:
        chat = [{"role": "user", "content": render("fitness.j2", task=self.config.task, envcard=designer.envcard)}]
        code = extract_code(llm.complete(chat, n=1, purpose="fitness", temperature=0.0)[0].text, FITNESS_ENTRY)
        report = self._check_fitness(code, self.folder / "fitness_check")
        if not report.ok:
            code = designer.fix(code, report.findings, entry=FITNESS_ENTRY, tag="fitness")
            report = self._check_fitness(code, self.folder / "fitness_check")
        if not report.ok:
            raise RunError("the LLM's success check for this task is unusable: " + report.summary()[:300]
                           + " (pass one with --fitness FILE)")
        self.console.print(f"[yellow]The task's success check was written by the LLM; review it: "
                           f"{self.folder / 'fitness.py'}[/]")
        try:
            return fitness_from_code(code, "llm", "a sparse success check written by the LLM for this task")
        except ValidationError as exc:
            raise RunError(f"the LLM's success check declares an unknown AGGREGATE {exc.errors()[0]['input']!r}"
                           " (pass one with --fitness FILE)") from None

    def _check_fitness(self, code: str | None, workdir: Path) -> CriticReport:
        # No LLM review here: the reviewer prompt is about rewards.
        return Critic(self.config.task.env_id, self.config.task.env_kwargs, seed=self.config.seed,
                      require_sandbox=self.config.require_sandbox).check(code, workdir, entry=FITNESS_ENTRY)

    def _round(self, it: int, designer: Designer, bars: Progress) -> None:
        folder = self.folder / f"iter_{it:02d}"
        # The best as the round first found it: a resumed round must send the same prompt.
        best = _best([c for c in self.record.candidates if c.iteration < it])
        if best is None:
            messages = designer.first_round_messages()
        else:
            analysis = self._analysis(best)
            others = [
                {"index": c.index, "summary": f"task score {c.fitness:.3f}"}
                for c in self.record.candidates
                if c.iteration == it - 1 and c.status == "trained" and c is not best and c.fitness is not None
            ]
            messages = designer.refine_messages(
                {"code": (self.folder / best.name / "reward.py").read_text(), "reflection": analysis.reflection,
                 "trained_steps": self._trainer.planned_steps, "episodes": analysis.episodes},
                analysis.feedback, others)
        _write(folder / "prompt.md", "\n\n".join(f"## {m['role']}\n\n{m['content']}" for m in messages))
        codes = designer.propose(self.config.samples, messages, tag=folder.name)

        accepted = []
        for j, code in enumerate(codes):
            cand = folder / f"cand_{j:02d}"
            code, report, fixes = self._criticize(cand, code, designer)
            if report.ok:
                accepted.append((j, cand, code, fixes))
            else:
                self._record(CandidateRecord(iteration=it, index=j, status="rejected", stage=report.stage,
                                             findings=report.findings, fixes=fixes))

        def train_one(item):
            j, cand, code, fixes = item
            task = bars.add_task(f"  iter {it} cand {j}", total=self._trainer.planned_steps)
            rec = self._train_and_analyze(it, j, cand, code, fixes, lambda step: progress(task, step))
            bars.update(task, completed=self._trainer.planned_steps)
            return rec

        def progress(task, step: int) -> None:
            self._check_stop()  # raised in the training's poll: its worker is killed
            bars.update(task, completed=step)

        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            try:
                for rec in pool.map(train_one, accepted):
                    self._record(rec)
            except BaseException:
                self._stop.set()  # before the pool waits for the other trainings to end
                raise

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise RunError("stopped")

    def _criticize(self, cand: Path, code: str | None, designer: Designer) -> tuple[str | None, CriticReport, int]:
        """Check a program; a rejected one goes back to the designer with the findings, a bounded number of times."""
        if (cand / "critic.json").is_file():
            report = CriticReport.model_validate_json((cand / "critic.json").read_text())
            final = cand / "reward.py"
            attempts = len(list(cand.glob("attempt_*.py")))
            return (final.read_text() if final.is_file() else None), report, max(0, attempts - 1)
        for attempt in range(self.config.fix_attempts + 1):
            _write(cand / f"attempt_{attempt}.py", NO_CODE if code is None else code)  # resume counts them
            report = self._critic.check(code, cand / "probe")
            if report.ok or attempt == self.config.fix_attempts:
                break
            code = designer.fix(code, report.findings, tag=f"{cand.relative_to(self.folder)}/fix_{attempt + 1}")
        if code is not None:
            _write(cand / "reward.py", code)
        _write(cand / "critic.json", report.model_dump_json(indent=1))
        return code, report, attempt

    def _train_and_analyze(self, it: int, j: int, cand: Path, code: str, fixes: int, on_progress) -> CandidateRecord:
        earlier = next((c for c in self.record.candidates if (c.iteration, c.index) == (it, j)), None)
        if earlier is not None and earlier.status in ("failed", "contained"):
            return earlier  # resumed: a training that failed would fail again, at the same cost
        rec = CandidateRecord(iteration=it, index=j, status="trained", fixes=fixes)
        train_dir = cand / "train"
        result = self._finished_training(train_dir)
        if result is None:
            out = self._trainer.train(code, train_dir, self.record.fitness, on_progress=on_progress)
            if not out.ok:
                contained = out.result is None and (out.sandbox.limit or out.sandbox.signal)
                rec.status = "contained" if contained else "failed"
                rec.error = out.problem or out.result.error
                return rec
            result = out.result
        self._check_stop()  # no analysis (an LLM call) for a run that is stopping
        rec.steps_per_second, rec.train_seconds = result.steps_per_second, result.seconds
        analysis = self._analysis(rec)
        if analysis is None:
            analysis = self._analyzer.analyze(code, train_dir / "policy.npz", cand, train_dir / "progress.jsonl",
                                              tag=rec.name, stop=self._check_stop)
            _write(cand / "analysis.json", analysis.model_dump_json(indent=1))
        if not analysis.ok:
            rec.status, rec.error = "failed", analysis.error
            return rec
        rec.fitness, rec.correlation, rec.error = analysis.fitness_mean, analysis.step_correlation, analysis.error
        return rec

    @staticmethod
    def _finished_training(train_dir: Path) -> TrainResult | None:
        if not (train_dir / "policy.npz").is_file():
            return None
        try:
            result = read_result(train_dir)
        except (ValueError, OSError):
            return None
        return result if isinstance(result, TrainResult) and result.ok else None

    def _analysis(self, rec: CandidateRecord) -> Analysis | None:
        path = self.folder / rec.name / "analysis.json"
        return Analysis.model_validate_json(path.read_text()) if path.is_file() else None

    def _record(self, rec: CandidateRecord) -> None:
        with self._lock:
            self.record.candidates = [
                c for c in self.record.candidates if (c.iteration, c.index) != (rec.iteration, rec.index)
            ] + [rec]
            self.record.best = _best(self.record.candidates)
            self.record.usage = self._usage()
        self.save()

    def _finish(self) -> None:
        best = self.record.best
        if best is None:
            self.record.status, self.record.error = "failed", "no candidate survived the critic and training"
        else:
            src, dst = self.folder / best.name, self.folder / "best"
            dst.mkdir(exist_ok=True)
            for name in ("reward.py", "analysis.json"):
                shutil.copyfile(src / name, dst / name)
            copy_output(src / "train" / "policy.npz", dst / "policy.npz")  # a worker wrote it
            self.record.status = "done"
        self.record.usage = self._usage()
        self.save()

    # --------------------------------------------------------------- report
    def summary_table(self) -> Table:
        cost, unknown = self.record.usage.get("cost_usd") or 0.0, self.record.usage.get("unknown_cost_calls")
        cost_text = "unknown" if unknown and not cost else f"${cost:.4f}" + (" + unknown" if unknown else "")
        table = Table(title=f"{self.config.task.name}: {self.record.status}"
                            f" | tokens {self.record.usage.get('prompt_tokens', 0)}+"
                            f"{self.record.usage.get('completion_tokens', 0)}"
                            f" | cost {cost_text}")
        table.add_column("candidate", no_wrap=True)
        for col in ("status", "fixes", "fitness", "reward~fitness", "steps/s", "note"):
            table.add_column(col)
        best = self.record.best
        for c in sorted(self.record.candidates, key=lambda c: (c.iteration, c.index)):
            mark = " *" if best is not None and (c.iteration, c.index) == (best.iteration, best.index) else ""
            table.add_row(
                c.name + mark, c.status, str(c.fixes),
                "" if c.fitness is None else f"{c.fitness:.3f}",
                "" if c.correlation is None else f"{c.correlation:.2f}",
                "" if c.steps_per_second is None else f"{c.steps_per_second:.0f}",
                (c.error.strip().splitlines()[-1] if c.error.strip() else "; ".join(c.findings))[:80],
            )
        return table
