"""RunFolder: every path of a run, written down once; atomic writes, the lock, "is this step done".

    RUN/run.json                  config, status, candidates, best, tokens and cost
    RUN/.lock                     held by the process running the loop (one at a time)
    RUN/envcard.py, fitness.py    what the designer read; the hidden measure (for review)
    RUN/fitness_check/            the critic's probe of the measure
    RUN/llm/cache/, calls.jsonl   every LLM reply
    RUN/iter_01/prompt.md         the designer's prompt of that round
    RUN/iter_01/cand_00/          a CandidateFolder: reward.py, attempt_*.py, critic.json, probe/,
                                  train/ (policy.npz, progress.jsonl, result.json, checkpoint.npz),
                                  analysis.json, rollout/, reward_eval/, measure_<steps>/ (the
                                  fitness where an allocation stopped its training)
                                  render/ and video.mp4 (the policy filmed), judge.json (a vision model's verdict)
    RUN/iter_03/edit/             a person's hand-edited program (refine --edit): reward.py, critic.json, probe/
    RUN/best/                     reward.py, policy.npz, analysis.json of the best candidate
    RUN/report.html               `reward-designer report`: the run for review, its videos linked
    RUN/warp/kernels/             with sim "warp": MuJoCo Warp's kernels, compiled once for every training

The loop, resume, `train` (whose --out is one CandidateFolder), and anything
that reads a run afterwards go through these classes, never through paths of
their own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import shutil
from pathlib import Path

from pydantic import ValidationError

from .jobs import read_result
from .records import RunError, RunRecord, candidate_name, edit_name
from .sandbox import copy_output
from .schemas import TrainResult

RUN_FILE = "run.json"
LOCK_FILE = ".lock"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, text: str) -> None:
    """``path`` holds either its old text or ``text``, never a part: a kill or a full disk mid-write
    leaves the last good file (and no temporary one) behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise RunError(f"the disk is full: cannot write {path}") from None
        raise


class CandidateFolder:
    """One program's folder: what each step of the pipeline leaves, and whether it is there."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()

    def __repr__(self) -> str:
        return f"CandidateFolder({str(self.path)!r})"

    # The layout.
    @property
    def reward(self) -> Path:
        return self.path / "reward.py"

    def attempt(self, i: int) -> Path:
        return self.path / f"attempt_{i}.py"

    @property
    def critic_report(self) -> Path:
        return self.path / "critic.json"

    @property
    def probe(self) -> Path:
        return self.path / "probe"

    @property
    def train(self) -> Path:
        return self.path / "train"

    @property
    def policy(self) -> Path:
        return self.train / "policy.npz"

    @property
    def progress(self) -> Path:
        return self.train / "progress.jsonl"

    @property
    def checkpoint(self) -> Path:
        """The training's last checkpoint (trainer.CHECKPOINT), which a later training continues."""
        return self.train / "checkpoint.npz"

    def measure(self, steps: int) -> Path:
        """Where the policy stopped at ``steps`` env steps (an allocation's rung) is measured."""
        return self.path / f"measure_{steps}"

    @property
    def analysis(self) -> Path:
        return self.path / "analysis.json"

    @property
    def rollout(self) -> Path:
        return self.path / "rollout"

    @property
    def reward_eval(self) -> Path:
        return self.path / "reward_eval"

    @property
    def fitness_check(self) -> Path:
        return self.path / "fitness_check"

    @property
    def render(self) -> Path:
        return self.path / "render"  # the render worker's folder (its mp4, its stills)

    @property
    def video(self) -> Path:
        return self.path / "video.mp4"  # the policy filmed, copied out of render/

    @property
    def judge(self) -> Path:
        return self.path / "judge.json"  # a vision model's verdict on the video's stills

    # What is done.
    def attempts(self) -> int:
        return len(list(self.path.glob("attempt_*.py")))

    def code(self) -> str | None:
        return self.reward.read_text() if self.reward.is_file() else None

    def finished_training(self) -> TrainResult | None:
        """The training's result if it finished well; None if it never ran, was cut short, failed, or
        stopped early to be continued."""
        result = self.training_result()
        return result if result is not None and result.complete else None

    def training_result(self) -> TrainResult | None:
        """The last training job's result if it went well, finished or stopped early (``complete``)."""
        if not self.policy.is_file():
            return None
        try:  # a worker wrote it: read_result reads it through the sandbox's safe reader
            result = read_result(self.train)
        except (ValueError, OSError):
            return None
        return result if isinstance(result, TrainResult) and result.ok else None

    def clear(self) -> None:
        """Forget every step's output, so the next pipeline over this folder starts afresh."""
        for path in [self.critic_report, self.reward, self.analysis, self.train / "result.json", self.policy,
                     self.checkpoint, *self.path.glob("attempt_*.py")]:
            path.unlink(missing_ok=True)
        for measure in self.path.glob("measure_*"):
            shutil.rmtree(measure, ignore_errors=True)


class RunFolder:
    """A run's folder. ``read_record``/``write_record`` are the only way run.json is read or written."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def envcard(self) -> Path:
        return self.path / "envcard.py"

    @property
    def fitness(self) -> Path:
        return self.path / "fitness.py"

    @property
    def fitness_check(self) -> Path:
        return self.path / "fitness_check"

    @property
    def llm_cache(self) -> Path:
        return self.path / "llm" / "cache"

    @property
    def llm_log(self) -> Path:
        return self.path / "llm" / "calls.jsonl"

    @property
    def warp(self) -> Path:
        return self.path / "warp"

    @property
    def best(self) -> Path:
        return self.path / "best"

    def iteration(self, it: int) -> Path:
        return self.path / f"iter_{it:02d}"

    def prompt(self, it: int) -> Path:
        return self.iteration(it) / "prompt.md"

    def candidate(self, iteration: int, index: int) -> CandidateFolder:
        return CandidateFolder(self.path / candidate_name(iteration, index))

    def named(self, name: str) -> CandidateFolder:
        """A candidate (or a person's edit) by the name records use: ``iter_01/cand_02``, ``iter_03/edit``."""
        return CandidateFolder(self.path / name)

    def edit(self, it: int) -> CandidateFolder:
        """A round's hand-edited program (``refine --edit``): the critic's report on it, and its code."""
        return CandidateFolder(self.path / edit_name(it))

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    def exists(self) -> bool:
        return self.run_file.exists()

    def llm_log_has_calls(self) -> bool:
        return self.llm_log.is_file() and self.llm_log.stat().st_size > 0

    def discard(self) -> None:
        """Remove what a run that never got going wrote (no LLM call, no candidate), and the folder
        itself if that leaves it empty."""
        for path in (self.run_file, self.envcard, self.fitness, self.path / LOCK_FILE):
            path.unlink(missing_ok=True)
        for folder in (self.fitness_check, self.llm_cache.parent, self.warp):
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def remove_leftovers(self) -> None:
        """Temporary files of writes a kill cut short (ours and the LLM cache's): only ever a
        session's own, so stale once this session holds the lock."""
        for folder in (self.path, self.llm_cache):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def read_record(self) -> RunRecord:
        if not self.run_file.is_file():
            raise RunError(f"no run in {self.path} (no {RUN_FILE})")
        try:
            return RunRecord.model_validate_json(self.run_file.read_bytes())
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(x) for x in e["loc"]) or "the record"
            raise RunError(f"{self.run_file} is damaged or from an incompatible version: {where}: {e['msg']}") from None
        except OSError as exc:
            raise RunError(f"cannot read {self.run_file}: {exc.strerror or exc}") from None

    def write_record(self, record: RunRecord) -> None:
        record.updated = now()
        write_atomic(self.run_file, record.model_dump_json(indent=1))

    def publish_best(self, name: str) -> None:
        """Copy the best candidate's program, analysis and policy into ``best/``."""
        src = CandidateFolder(self.path / name)
        self.best.mkdir(exist_ok=True)
        for path in (src.reward, src.analysis):
            shutil.copyfile(path, self.best / path.name)
        copy_output(src.policy, self.best / "policy.npz")  # a worker wrote it

    @contextlib.contextmanager
    def exclusive(self):
        """The run folder to this process alone: two sessions of one run would pay for the same LLM
        calls and write over each other's files. The lock goes with the process, however it ends,
        and its file goes with a session that ends normally."""
        lock = self.path / LOCK_FILE
        while True:
            f = open(lock, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "?"
                f.close()
                raise RunError(f"{self.path} is in use by another process (pid {holder})") from None
            # A lock file removed by the session that held it while we waited for it: take the new one.
            try:
                if os.stat(lock).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        try:
            f.truncate(0)
            f.write(str(os.getpid()))
            f.flush()
            self.remove_leftovers()
            yield
        finally:
            lock.unlink(missing_ok=True)  # while still held, so no one locks the file being removed
            f.close()
