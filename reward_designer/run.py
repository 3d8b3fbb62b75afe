"""Run: the design loop over a run folder, resumable at any point.

Every step leaves its output in the folder before the next one starts (LLM
replies in the response cache, critic reports, training results, analyses),
and every step first looks for its output there (``RunFolder`` says where).
Resuming a run is running it again: finished steps are read back, so no
finished LLM call is repeated (each call is cached under its place in the
run) and no finished or failed training is redone; a training killed half-way
continues from its last checkpoint.

A round: the designer proposes K programs; each goes through the
``CandidatePipeline``'s critic (with fixes), then the round's ``Allocation``
trains and analyzes the accepted ones through the ``Executor``; the
``Selector`` names the best, whose program and analysis the next round reads.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Callable

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .analyzer import Analyzer
from .critic import Critic
from .designer import Designer
from .envcard import EnvCard
from .executor import Executor, LocalExecutor
from .llm import Usage, make_client
from .pipeline import CandidatePipeline, check_fitness, rejected
from .program import FITNESS_ENTRY, extract_code, fitness_aggregate, fitness_from_code
from .judge import Judge, Judgement
from .records import CandidateRecord, Feedback, RunConfig, RunError, RunRecord, candidate_name
from .render import RenderError, film_candidate, stills
from .runfolder import RunFolder, now, write_atomic
from .schemas import FitnessSpec
from .selection import ALLOCATIONS, SELECTORS
from .templates import render
from .trainer import Trainer, check_trainable

__all__ = ["Run", "RunConfig", "RunError", "RunRecord", "CandidateRecord", "EditRejected"]

JUDGE_STILLS = 8  # frames of a round's best shown to the vision judge


class EditRejected(RunError):
    """A person's edited program failed the critic: where, and the findings."""

    def __init__(self, stage: str, findings: list[str]):
        super().__init__(f"the edited program was rejected by the critic at {stage}: "
                         + "; ".join(f.strip().splitlines()[-1] for f in findings if f.strip()))
        self.stage, self.findings = stage, findings


HACKING = {"rose_alone": "its reward rose over training while the task score did not",
           "against": "its reward was high where the task score was low"}


def measure_description(code: str) -> str:
    """The measure's own ``# measures: ...`` line (the fitness prompt asks for one), else what it is."""
    found = re.search(r"^#\s*measures:\s*(.+)$", code, re.MULTILINE)
    return found.group(1).strip()[:300] if found else "a measure of success written by the LLM for this task"


def _add_usage(a: dict, b: dict) -> dict:
    return {k: (a.get(k) or 0) + (b.get(k) or 0) for k in set(a) | set(b)}


class Run:
    """A design run in a folder: ``Run.create(folder, config).execute()``, later ``Run.open(folder).execute()``.

    ``executor``: where its jobs run (default: sandboxed local workers, ``config.workers`` at once).
    """

    def __init__(self, folder: Path, record: RunRecord, console: Console | None = None,
                 executor: Executor | None = None):
        self.folder = RunFolder(folder)
        self.record = record
        self.console = console or Console(stderr=True)
        self.executor = executor
        # Asked, with the LLM's measure, before anything is spent on it; False stops the run.
        self.accept_fitness: Callable[[FitnessSpec, Path], bool] = lambda fitness, path: True
        self._lock = threading.Lock()

    @classmethod
    def create(cls, folder: Path, config: RunConfig, console: Console | None = None,
               executor: Executor | None = None) -> "Run":
        """A new run in ``folder``, once the env is found trainable and the LLM reachable."""
        run_folder = RunFolder(folder)
        if run_folder.exists():
            raise RunError(f"{folder} already holds a run; continue it with `reward-designer resume {folder}`")
        if run_folder.path.is_dir() and any(run_folder.path.iterdir()):
            raise RunError(f"{folder} holds files but no run: give a new or empty folder, so nothing of "
                           "yours is written over or mixed with the run's files")
        for what, name, known in (("selector", config.selector, SELECTORS),
                                  ("allocation", config.allocation, ALLOCATIONS)):
            if name not in known:
                raise RunError(f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")
        # Before the folder is made: a bad env, model or API base should leave nothing behind.
        try:
            check_trainable(config.task.env_id, config.task.env_kwargs)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        make_client(config.model, api_base=config.api_base,
                    replay=Path(config.replay) if config.replay else None).check_reachable()
        run = cls(folder, RunRecord(config=config, created=now()), console, executor)
        try:
            run.save()
        except OSError as exc:
            raise RunError(f"cannot create the run folder {folder}: {exc.strerror or exc}") from None
        return run

    @classmethod
    def open(cls, folder: Path, console: Console | None = None, executor: Executor | None = None) -> "Run":
        return cls(folder, RunFolder(folder).read_record(), console, executor)

    @property
    def config(self) -> RunConfig:
        return self.record.config

    def add_rounds(self, iterations: int) -> None:
        """Extend the run to ``iterations`` rounds (a finished run too): the rounds done are read
        back, so only the new ones ask the LLM anything."""
        done = max((c.iteration for c in self.record.candidates), default=0)
        if iterations < max(done, self.config.iterations):
            raise RunError(f"the run already has {max(done, self.config.iterations)} rounds: "
                           f"--iterations {iterations} would drop some")
        self.record.config = self.config.model_copy(update={"iterations": iterations})

    def refine(self, text: str, start: str | None = None, edit: str | None = None, quiet: bool = False) -> RunRecord:
        """One more round, steered by a person: ``text`` in its prompt, refining the best so far or the
        trained candidate ``start``; ``edit``, a hand-edited program, becomes the round's parent once
        the critic passes it (EditRejected, with the findings, if it does not). The feedback is in
        run.json before the round starts, so a stopped refine resumes as asked."""
        with self.folder.exclusive():
            if self.record.status != "done":
                raise RunError(f"the run is {self.record.status}: finish it with `reward-designer resume "
                               f"{self.folder.path}` before a feedback round")
            start = start or (self.record.best.name if self.record.best else None)
            trained = {c.name for c in self.record.candidates if c.status == "trained"}
            if start not in trained:
                raise RunError(f"{start or 'the run'} has no trained policy to refine; trained: "
                               + (", ".join(sorted(trained)) or "none"))
            it = max([self.config.iterations, *(c.iteration for c in self.record.candidates)]) + 1
            entry = Feedback(round=it, text=text.strip(), from_=start, created=now())
            if edit is not None:
                entry.edit = self._check_edit(it, edit)
            self.add_rounds(it)
            self.record.feedback = [f for f in self.record.feedback if f.round != it] + [entry]
            self.save()
            return self._execute(quiet)

    def _check_edit(self, it: int, code: str) -> str:
        """The critic's lint and probe on a person's program (no LLM fixes: it is theirs to change)."""
        cfg, cand = self.config, self.folder.edit(it)
        cand.clear()
        critic = Critic(cfg.task.env_id, cfg.task.env_kwargs, task=cfg.task, seed=cfg.seed,
                        executor=self.executor or LocalExecutor(1, cfg.require_sandbox))
        report = critic.check(code, cand.probe)
        write_atomic(cand.reward, code)
        write_atomic(cand.critic_report, report.model_dump_json(indent=1))
        if not report.ok:
            raise EditRejected(report.stage, report.findings)
        return cand.path.relative_to(self.folder.path).as_posix()

    def save(self) -> None:
        with self._lock:
            self.folder.write_record(self.record)

    # ------------------------------------------------------------------ loop
    def execute(self, quiet: bool = False) -> RunRecord:
        """Run (or go on with) the loop. An interruption or an LLM error leaves the run "stopped",
        its record saved, and is raised on: ``Run.open(folder).execute()`` continues it."""
        with self.folder.exclusive():
            return self._execute(quiet)

    def _execute(self, quiet: bool) -> RunRecord:
        self.record.status, self.record.error = "running", ""
        # What earlier sessions spent, from the call log: their last saved totals can miss the
        # calls made after the last candidate was recorded.
        usage_before = Usage.from_log(self.folder.llm_log).model_dump()
        self._usage = lambda: usage_before
        # A session's own executor: a stop cancels it, and the next session starts with a fresh one.
        self._executor = self.executor or LocalExecutor(self.config.workers, self.config.require_sandbox)
        try:
            return self._loop(quiet)
        except BaseException as exc:
            self._executor.cancel()
            if isinstance(exc, RunError) and self._nothing_spent():
                # Failed before its first LLM call (a broken card fitness, an env that cannot train): a
                # run with nothing in it would only stand in the way of the corrected one.
                self.folder.discard()
                raise RunError(f"{exc}; nothing was kept in {self.folder.path}: fix it and run design again") from None
            self.record.status = "stopped"
            self.record.error = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc).splitlines()[0][:300]
            self.record.usage = self._usage()
            try:
                self.save()
            except (OSError, RunError):  # the full disk that stopped the step: run.json keeps its last good state
                pass
            raise

    def _nothing_spent(self) -> bool:
        return (not self.record.candidates and self.record.fitness is None
                and not (self._usage().get("calls") or 0) and not self.folder.llm_log_has_calls())

    def _loop(self, quiet: bool) -> RunRecord:
        cfg, folder = self.config, self.folder
        llm = make_client(cfg.model, api_base=cfg.api_base, replay=Path(cfg.replay) if cfg.replay else None,
                          cache_dir=folder.llm_cache, log_path=folder.llm_log, prices=cfg.prices)
        llm.check_reachable()
        usage_before = self._usage()
        self._usage = lambda: _add_usage(usage_before, llm.usage.model_dump())

        try:
            card = EnvCard.from_env(cfg.task.env_id, cfg.task.env_kwargs)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        envcard = card.render()
        write_atomic(folder.envcard, envcard)
        critic = Critic(cfg.task.env_id, cfg.task.env_kwargs, llm=llm if cfg.llm_critic else None,
                        task=cfg.task, envcard=envcard, seed=cfg.seed, executor=self._executor)
        trainer = Trainer(cfg.task.env_id, cfg.train_steps, cfg.task.env_kwargs, seed=cfg.seed,
                          device=cfg.device, ppo={**cfg.task.ppo, **cfg.ppo}, sim=cfg.sim,
                          kernel_dir=folder.warp, executor=self._executor)
        if cfg.sim == "warp" and not quiet:
            self.console.print(f"MuJoCo Warp: compiling the kernels for {cfg.task.env_id} once, for every training")
        try:
            trainer.prepare()
        except ValueError as exc:
            raise RunError(str(exc)) from None
        if (note := trainer.rounding_note()) and not quiet:
            self.console.print(note, markup=False)
        designer = Designer(llm, cfg.task, envcard)
        fitness = self._fitness(llm, designer, critic)
        analyzer = Analyzer(cfg.task.env_id, fitness, cfg.task.env_kwargs, episodes=cfg.episodes,
                            llm=llm if cfg.llm_analysis else None, task=cfg.task, card=card,
                            executor=self._executor)
        self._pipeline = CandidatePipeline(
            critic, trainer, analyzer, fix=lambda code, findings, tag: designer.fix(code, findings, tag=tag),
            fix_attempts=cfg.fix_attempts, stop=self._executor.raise_if_cancelled)
        self._selector = SELECTORS[cfg.selector]()

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=self.console, disable=quiet) as bars:
            rounds = bars.add_task("rounds", total=cfg.iterations)
            judge = self._judge(llm)
            for it in range(1, cfg.iterations + 1):
                self._round(it, designer, bars)
                self._film(it, judge, quiet)
                bars.advance(rounds)
        self._finish()
        if not quiet:
            self.console.print(self.summary_table())
        return self.record

    def _fitness(self, llm, designer: Designer, critic: Critic) -> FitnessSpec:
        """The task's hidden measure: the card's, else one asked of the LLM once (``accept_fitness``
        shows it to the person before anything is spent on it)."""
        if self.record.fitness is None:
            fitness = self.config.task.fitness
            if fitness is None:
                fitness = self._fitness_from_llm(llm, designer, critic)
            elif not (report := check_fitness(critic, fitness.code, self.folder.fitness_check)).ok:
                # Before any LLM call: with a broken measure every candidate would fail after training.
                raise RunError("the task's success check (compute_fitness) is unusable: " + report.summary()[:300])
            code = fitness.code
            if fitness_aggregate(code, "") != fitness.aggregate:  # a card's aggregate: so the file scores alike
                code = f'AGGREGATE = "{fitness.aggregate}"\n\n' + code
            write_atomic(self.folder.fitness, code)
            self.record.fitness = fitness
            self.save()
        return self.record.fitness

    def _fitness_from_llm(self, llm, designer: Designer, critic: Critic) -> FitnessSpec:
        chat = [{"role": "user", "content": render("fitness.j2", task=self.config.task, envcard=designer.envcard)}]
        code = extract_code(llm.complete(chat, n=1, purpose="fitness", temperature=0.0)[0].text, FITNESS_ENTRY)
        report = check_fitness(critic, code, self.folder.fitness_check)
        if not report.ok:
            code = designer.fix(code, report.findings, entry=FITNESS_ENTRY, tag="fitness")
            report = check_fitness(critic, code, self.folder.fitness_check)
        if not report.ok:
            raise RunError("the LLM's success check for this task is unusable: " + report.summary()[:300]
                           + " (pass one with --fitness FILE)")
        try:
            fitness = fitness_from_code(code, "llm", measure_description(code))
        except ValidationError as exc:
            raise RunError(f"the LLM's success check declares an unknown AGGREGATE {exc.errors()[0]['input']!r}"
                           " (pass one with --fitness FILE)") from None
        write_atomic(self.folder.fitness, code)
        if not self.accept_fitness(fitness, self.folder.fitness):
            raise RunError(f"the measure written by the LLM was not accepted; pass your own with --fitness FILE "
                           f"(the LLM's is in {self.folder.fitness})")
        return fitness

    def _round(self, it: int, designer: Designer, bars: Progress) -> None:
        # The best as the round first found it: a resumed round must send the same prompt.
        best = self._selector.best([c for c in self.record.candidates if c.iteration < it])
        person = next((f for f in self.record.feedback if f.round == it), None)  # refine's round
        if person is not None and person.from_:
            best = next(c for c in self.record.candidates if c.name == person.from_)
        if best is None:
            messages = designer.first_round_messages()
        else:
            analysis = self._pipeline.analysis(self.folder.candidate(*best.key))
            others = [{"index": c.index, "summary": self._one_line(c)}
                      for c in sorted(self.record.candidates, key=lambda c: c.key)
                      if c.iteration == it - 1 and c.key != best.key]
            parent = self.folder.named(person.edit if person is not None and person.edit else best.name)
            judged = self.folder.candidate(*best.key).judge
            messages = designer.refine_messages(
                {"code": parent.code(), "reflection": analysis.reflection,
                 "trained_steps": self._pipeline.trainer.planned_steps, "episodes": analysis.episodes},
                analysis.feedback, others, person=person,
                judge=Judgement.model_validate_json(judged.read_text()).verdict if judged.is_file() else "")
        write_atomic(self.folder.prompt(it), "\n\n".join(f"## {m['role']}\n\n{m['content']}" for m in messages))
        programs = designer.propose(self.config.samples, messages, tag=self.folder.iteration(it).name,
                                    parent=(person.edit if person is not None and person.edit else best.name)
                                    if best else None)

        accepted = []
        for j, program in enumerate(programs):
            checked = self._pipeline.criticize(self.folder.candidate(it, j), program, tag=candidate_name(it, j))
            if checked.report.ok:
                accepted.append((j, checked))
            else:
                self._record(rejected(it, j, checked))

        def train_one(item, budget: float = 1.0) -> CandidateRecord:  # budget: the Allocation's share
            j, checked = item
            earlier = next((c for c in self.record.candidates if c.key == (it, j)), None)
            if earlier is not None and earlier.status in ("failed", "contained"):
                return earlier  # resumed: a training that failed would fail again, at the same cost
            steps = self._pipeline.trainer.steps_at(budget)
            bar = bars.add_task(f"  iter {it} cand {j}", total=steps)
            rec = self._pipeline.train_and_analyze(
                self.folder.candidate(it, j), checked.program, it, j, checked.fixes,
                on_progress=lambda step: bars.update(bar, completed=step), tag=candidate_name(it, j), budget=budget)
            bars.update(bar, completed=steps)
            return rec

        # The budget in updates: halving's first cut waits for a minimum of them.
        updates = self._pipeline.trainer.updates
        for rec in ALLOCATIONS[self.config.allocation]().run(accepted, train_one, self._executor, updates=updates):
            self._record(rec)

    def _one_line(self, rec: CandidateRecord) -> str:
        """What another candidate tried and how it went, for the next round to learn from."""
        if rec.status == "rejected":
            return f"rejected by the critic ({rec.stage}): {rec.note()[:200]}"
        if rec.status == "culled":  # the round's allocation stopped it: no analysis beyond its score
            return rec.note()
        if rec.status != "trained":
            return f"its training failed: {rec.note()[:200]}"
        analysis = self._pipeline.analysis(self.folder.candidate(*rec.key))
        parts = [f"task score {rec.fitness:.3g}"]
        if analysis is not None and analysis.components:
            parts.append("components " + ", ".join(c.name for c in analysis.components))
        if analysis is not None:
            parts += [HACKING[reason] + ": reward hacking suspected" for reason in analysis.hacking]
        cause = next((line.strip(" -*") for line in (analysis.feedback if analysis else "").splitlines()
                      if line.strip(" -*")), "")
        if cause:
            parts.append(f"analysis: {cause[:200]}")
        return "; ".join(parts)

    def _judge(self, llm) -> Judge | None:
        """The vision judge's client (``config.judge``): a replayed run's replies come from its replay."""
        cfg = self.config
        if not cfg.judge:
            return None
        if cfg.replay:
            return Judge(llm, cfg.task)
        client = make_client(cfg.judge, api_base=cfg.judge_api_base, cache_dir=self.folder.llm_cache,
                             log_path=self.folder.llm_log)
        client.check_reachable()
        spent = self._usage
        self._usage = lambda: _add_usage(spent(), client.usage.model_dump())
        return Judge(client, cfg.task)

    def _film(self, it: int, judge: Judge | None, quiet: bool) -> None:
        """With ``videos`` or a judge: the round's best filmed (and its stills judged), once. A video that
        cannot be made is said and skipped: it is for review, and the run goes on without it."""
        best = self._selector.best([c for c in self.record.candidates if c.iteration == it])
        if best is None or not (self.config.videos or judge):
            return
        cand = self.folder.candidate(*best.key)
        if cand.video.is_file() and (judge is None or cand.judge.is_file()):
            return
        try:
            result = film_candidate(cand, self.config.task, stills=JUDGE_STILLS if judge else 0,
                                    executor=self._executor, poll=self._executor.raise_if_cancelled)
        except RenderError as exc:
            if not quiet:
                self.console.print(f"warning: no video of {best.name}: {exc}", markup=False)
            return
        if judge is not None and not cand.judge.is_file():
            self._executor.raise_if_cancelled()
            judgement = judge.judge(stills(cand.render, result.stills), result.frames / result.fps,
                                    tag=f"{best.name}/judge")
            write_atomic(cand.judge, judgement.model_dump_json(indent=1))

    def _record(self, rec: CandidateRecord) -> None:
        with self._lock:
            self.record.candidates = [c for c in self.record.candidates if c.key != rec.key] + [rec]
            self.record.best = self._selector.best(self.record.candidates)
            self.record.usage = self._usage()
        self.save()

    def _finish(self) -> None:
        best = self.record.best
        if best is None:
            self.record.status, self.record.error = "failed", "no candidate survived the critic and training"
        else:
            self.folder.publish_best(best.name)
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
                            f" | cost {cost_text}",
                      caption="corr: the reward's correlation with the fitness, step by step")
        # At 80 columns (a piped or logged run) only the note folds: names, statuses and numbers stay whole.
        for col in ("candidate", "status", "fixes", "fitness", "corr", "steps/s"):
            table.add_column(col, no_wrap=True)
        table.add_column("note", overflow="fold")
        best = self.record.best
        for c in sorted(self.record.candidates, key=lambda c: c.key):
            mark = " *" if best is not None and c.key == best.key else ""
            table.add_row(
                c.name + mark, c.status, str(c.fixes),
                "" if c.fitness is None else f"{c.fitness:.3f}",
                "" if c.correlation is None else f"{c.correlation:.2f}",
                "" if c.steps_per_second is None else f"{c.steps_per_second:.0f}",
                "; ".join(part for part in ("reward hacking suspected" if c.hacking else "", c.note()[:80]) if part),
            )
        return table
