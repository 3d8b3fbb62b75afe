"""CandidatePipeline: one reward program through critic -> train -> analyze.

`design` (every candidate of every round), `train` (one file), the Python API
and `bench` all take a program through this one object, so a program is judged
the same way wherever it comes from. Each step first looks in the candidate's
folder for its output (``CandidateFolder``): a resumed run repeats nothing
finished.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, NamedTuple

from .analyzer import Analyzer
from .critic import Critic, CriticReport
from .llm import RequestRefused
from .program import FITNESS_ENTRY, NO_CODE, RewardProgram
from .records import Analysis, CandidateRecord
from .runfolder import CandidateFolder, write_atomic
from .schemas import FitnessSpec
from .tblog import EVENTS_DIR, write_events
from .trainer import Trainer

# fix(code, findings, tag) -> a new program (None: the reply had none); the designer's fixer.
Fixer = Callable[[str | None, list[str], str], str | None]


class Checked(NamedTuple):
    program: RewardProgram  # as the critic last saw it (after any fixes)
    report: CriticReport
    fixes: int  # times it went back to the designer


class CandidatePipeline:
    """``critic``, then ``trainer``, then ``analyzer`` (if any) over one CandidateFolder.

    ``fitness``: the task's measure, logged over training (the analyzer measures it afterwards).
    ``fix``: a rejected program goes back through it with the findings, up to
    ``fix_attempts`` times, before any training is spent on it. ``stop`` is
    called between steps and while workers run; if it raises, the step's worker
    is killed and the exception goes on.
    """

    def __init__(self, critic: Critic, trainer: Trainer, analyzer: Analyzer | None = None,
                 fitness: FitnessSpec | None = None, fix: Fixer | None = None, fix_attempts: int = 0,
                 stop: Callable[[], None] | None = None):
        self.critic, self.trainer, self.analyzer = critic, trainer, analyzer
        self.fitness = fitness if fitness is not None or analyzer is None else analyzer.fitness
        self.fix, self.fix_attempts = fix, fix_attempts if fix is not None else 0
        self.stop = stop or (lambda: None)

    def run(self, cand: CandidateFolder, program: RewardProgram, iteration: int = 0, index: int = 0,
            on_progress: Callable[[int], None] | None = None, tag: str = "") -> CandidateRecord:
        """The whole way: a rejected program's record says why; a trained one's what it scored."""
        checked = self.criticize(cand, program, tag)
        if not checked.report.ok:
            return rejected(iteration, index, checked)
        return self.train_and_analyze(cand, checked.program, iteration, index, checked.fixes, on_progress, tag)

    def criticize(self, cand: CandidateFolder, program: RewardProgram, tag: str = "") -> Checked:
        """Check a program; a rejected one goes back to the fixer with the findings, a bounded number of times."""
        if cand.critic_report.is_file():  # done before: the fixes were LLM calls, never repeated
            report = CriticReport.model_validate_json(cand.critic_report.read_text())
            return Checked(program.model_copy(update={"code": cand.code()}), report, max(0, cand.attempts() - 1))
        code = program.code
        for attempt in range(self.fix_attempts + 1):
            write_atomic(cand.attempt(attempt), NO_CODE if code is None else code)  # resume counts them
            report = self.critic.check(code, cand.probe)
            if report.ok or attempt == self.fix_attempts:
                break
            self.stop()
            try:
                code = self.fix(code, report.findings, f"{tag}/fix_{attempt + 1}" if tag else f"fix_{attempt + 1}")
            except RequestRefused as exc:  # the program stays rejected; the run goes on without the fix
                report = report.model_copy(update={"findings": [*report.findings, f"the fix request failed: {exc}"]})
                break
        if code is not None:
            write_atomic(cand.reward, code)
        write_atomic(cand.critic_report, report.model_dump_json(indent=1))
        return Checked(program.model_copy(update={"code": code}), report, attempt)

    def train_and_analyze(self, cand: CandidateFolder, program: RewardProgram, iteration: int = 0, index: int = 0,
                          fixes: int = 0, on_progress: Callable[[int], None] | None = None, tag: str = "",
                          budget: float = 1.0) -> CandidateRecord:
        """Train on an accepted program (its code None: the env's own reward), then (with an
        analyzer) measure the policy.

        ``budget`` under 1: train to that fraction of the steps (whole batches; a training stopped
        earlier continues from its checkpoint) and only measure the fitness there (no reward
        evaluation, no LLM): the record's ``budget`` says how far it got. An allocation decides
        from it whether the training goes on."""
        rec = CandidateRecord(iteration=iteration, index=index, status="trained", fixes=fixes, parent=program.parent)
        until = self.trainer.steps_at(budget)
        partial = until < self.trainer.planned_steps
        measured = cand.measure(until) / "analysis.json"
        if partial and measured.is_file():  # measured there before: nothing is redone
            return _measured(rec, Analysis.model_validate_json(measured.read_text()), until,
                             self.trainer.planned_steps)
        result = cand.finished_training()
        if result is None and partial and (done := cand.training_result()) is not None and done.steps >= until:
            result = done
        if result is None:
            def progress(step: int) -> None:
                self.stop()  # raised in the training's poll: its worker is killed
                if on_progress is not None:
                    on_progress(step)

            out = self.trainer.train(program.code, cand.train, self.fitness, on_progress=progress,
                                     stop_at_steps=until if partial else None)
            if not out.ok:
                contained = out.result is None and (out.sandbox.limit or out.sandbox.signal)
                rec.status = "contained" if contained else "failed"
                rec.error = out.problem or out.result.error
                return rec
            result = out.result
            write_events(cand.progress, cand.train / EVENTS_DIR)  # for `tensorboard --logdir RUN`
        if partial and self.analyzer is not None:
            # The fitness alone, from the analyze worker (the program's process never scores itself).
            self.stop()
            analysis = self.analyzer.analyze(None, cand.policy, cand.measure(until), cand.progress, stop=self.stop)
            write_atomic(measured, analysis.model_dump_json(indent=1))
            shutil.rmtree(cand.measure(until) / "rollout", ignore_errors=True)  # its trajectories: read by no one
            return _measured(rec, analysis, until, self.trainer.planned_steps)
        rec.steps, rec.steps_per_second, rec.train_seconds = result.steps, result.steps_per_second, result.seconds
        if self.analyzer is None:
            return rec
        self.stop()  # no analysis (an LLM call) for a run that is stopping
        analysis = self.analysis(cand)
        if analysis is None:
            analysis = self.analyzer.analyze(program.code, cand.policy, cand.path, cand.progress, tag=tag,
                                             stop=self.stop)
            write_atomic(cand.analysis, analysis.model_dump_json(indent=1))
        if not analysis.ok:
            rec.status, rec.error = "failed", analysis.error
            return rec
        rec.fitness, rec.correlation, rec.error = analysis.fitness_mean, analysis.step_correlation, analysis.error
        rec.hacking = list(analysis.hacking)
        return rec

    @staticmethod
    def analysis(cand: CandidateFolder) -> Analysis | None:
        return Analysis.model_validate_json(cand.analysis.read_text()) if cand.analysis.is_file() else None


def check_fitness(critic: Critic, code: str | None, workdir: Path) -> CriticReport:
    """The critic's probe of a task's measure, before anything is trained on it (no LLM review: the
    reviewer prompt is about rewards)."""
    return critic.check(code, workdir, entry=FITNESS_ENTRY, review=False)


def _measured(rec: CandidateRecord, analysis: Analysis, steps: int, planned: int) -> CandidateRecord:
    """``rec`` of a training stopped at ``steps`` of ``planned``, with the fitness measured there."""
    rec.steps, rec.budget = steps, steps / planned
    if not analysis.ok:
        rec.status, rec.error = "failed", analysis.error
    else:
        rec.fitness = analysis.fitness_mean
    return rec


def rejected(iteration: int, index: int, checked: Checked) -> CandidateRecord:
    return CandidateRecord(iteration=iteration, index=index, status="rejected", stage=checked.report.stage,
                           findings=checked.report.findings, fixes=checked.fixes, parent=checked.program.parent)
