"""The seams of a run: one pipeline for every way in, the executor, the run folder's layout and lock."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fake_executor import FakeExecutor, program
from test_tblog import read_scalars
from reward_designer import design, load_task
from reward_designer.executor import Cancelled, LocalExecutor, core_sets, parallel
from reward_designer.records import RunError
from reward_designer.run import Run
from reward_designer.runfolder import RunFolder, write_atomic
from reward_designer.sandbox import Limits


def replies(tmp_path, design_replies, fix=()) -> str:
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"design": list(design_replies), "fix": list(fix),
                                    "analyze": ["- keep going"] * 16}))
    return str(path)


CONFIG = dict(train_steps=2048, episodes=2, device="cpu", ppo={"num_envs": 4, "num_steps": 64})


def test_a_fake_executor_drives_a_whole_design_loop_without_sandboxes(tmp_path):
    replayed = replies(tmp_path, [program(1.0), program(3.0, broken=True), program(2.0), program(0.5)],
                       fix=[program(4.0)])
    fake = FakeExecutor()
    t0 = time.monotonic()
    record = design(load_task("pendulum-upright"), tmp_path / "run", replay=replayed, iterations=2, samples=2,
                    executor=fake, **CONFIG)
    seconds = time.monotonic() - t0

    by_name = {c.name: c for c in record.candidates}
    assert record.status == "done"
    assert by_name["iter_01/cand_01"].fixes == 1 and by_name["iter_01/cand_01"].fitness == 4.0  # fixed, then trained
    assert record.best.name == "iter_01/cand_01"
    assert {c.parent for c in record.candidates if c.iteration == 2} == {"iter_01/cand_01"}
    round_two = (tmp_path / "run" / "iter_02" / "prompt.md").read_text()
    assert "SCORE = 4.0" in round_two  # the best program is what round 2 refines
    assert "SCORE = 3.0" not in round_two  # ... as the critic passed it, after its fix
    assert (tmp_path / "run" / "best" / "reward.py").read_text().count("SCORE = 4.0") == 1
    assert fake.jobs.count("train") == 4 and "warm" not in fake.jobs
    events = tmp_path / "run" / "iter_01" / "cand_01" / "train" / "tensorboard"
    assert read_scalars(events)["fitness"] == [(2048, 4.0)]  # `tensorboard --logdir RUN` shows every training
    assert seconds < 60, f"the whole loop took {seconds:.0f} s"

    # The folder, read through RunFolder, holds what the record says; resuming repeats no job.
    folder = RunFolder(tmp_path / "run")
    assert folder.read_record().best == record.best
    assert folder.candidate(2, 0).finished_training() is not None
    assert not (tmp_path / "run" / ".lock").exists()  # a finished session takes its lock file along
    again = FakeExecutor()
    assert Run.open(tmp_path / "run", executor=again).execute(quiet=True).best == record.best
    assert again.jobs == []


def test_a_cancelled_executor_stops_the_run_and_a_fresh_one_resumes_it(tmp_path):
    class StopsAtTheSecondTraining(FakeExecutor):
        def train(self, job, workdir):
            if self.jobs.count("train") == 2:
                self.cancel()
                self.raise_if_cancelled()
            return super().train(job, workdir)

    replayed = replies(tmp_path, [program(1.0), program(2.0)])
    with pytest.raises(Cancelled):
        design(load_task("pendulum-upright"), tmp_path / "run", replay=replayed, iterations=1, samples=2,
               executor=StopsAtTheSecondTraining(slots=1), **CONFIG)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "stopped"
    fresh = FakeExecutor()
    record = Run.open(tmp_path / "run", executor=fresh).execute(quiet=True)
    assert record.status == "done" and record.best.fitness == 2.0
    assert fresh.jobs.count("train") == 1  # the first training was finished and is not redone


def test_parallel_keeps_order_and_cancels_on_the_first_error():
    fake = FakeExecutor(slots=3)
    assert list(parallel(fake, lambda x: x * x, range(5))) == [0, 1, 4, 9, 16]

    def fails_on_two(x):
        if x == 2:
            raise ValueError("two")
        return x

    with pytest.raises(ValueError, match="two"):
        list(parallel(fake, fails_on_two, range(4)))
    with pytest.raises(Cancelled):
        fake.raise_if_cancelled()


def test_the_cpu_budget_gives_parallel_jobs_disjoint_cores():
    assert core_sets(1, [0, 1]) == [[0, 1]]
    assert core_sets(2, [0, 1]) == [[0], [1]]
    assert core_sets(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert core_sets(3, [0, 1]) == [[0], [1], [0]]  # more slots than cores: a core each, in turn
    sets = core_sets(4, list(range(16)))
    assert sorted(c for s in sets for c in s) == list(range(16)) and {len(s) for s in sets} == {4}


def test_a_local_job_runs_on_the_cores_it_was_given(tmp_path):
    from reward_designer.schemas import ProbeJob

    executor = LocalExecutor(slots=2, cores=[0, 0])  # each slot on core 0 only
    code = "import torch\ndef compute_reward(state, action):\n    r = state.obs[:, 0]\n    return r, {'r': r}\n"
    outcome = executor.run(ProbeJob(env_id="Pendulum-v1", code=code, num_envs=2, steps=2), tmp_path / "w",
                           Limits(wall_s=60))
    assert outcome.ok
    assert json.loads((tmp_path / "w" / "job.json").read_text())["cores"] == [0]
    executor.cancel()
    with pytest.raises(Cancelled):
        executor.run(ProbeJob(env_id="Pendulum-v1", code=code), tmp_path / "w2", Limits(wall_s=60))


def test_the_lock_is_held_by_one_process_and_its_file_leaves_with_it(tmp_path):
    folder = RunFolder(tmp_path)
    with folder.exclusive():
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
        with pytest.raises(RunError, match=r"in use by another process \(pid \d+\)"):
            with RunFolder(tmp_path).exclusive():
                pass
    assert not (tmp_path / ".lock").exists()
    with folder.exclusive():  # free again
        pass


def test_an_atomic_write_on_a_full_disk_keeps_the_last_good_file_and_no_temporary(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "run.json"
    write_atomic(path, "good")

    def full(self, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(RunError, match="the disk is full: cannot write .*run.json"):
        write_atomic(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "good" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


NAN_REWARD = "import torch\n\ndef compute_reward(state, action):\n    r = state.obs[:, 0] / 0.0 * 0.0\n    return r, {'r': r}\n"


def test_train_design_and_the_api_report_a_critic_finding_the_same_way(tmp_path):
    """One pipeline behind all three: the same program gets the same findings from each."""
    import reward_designer
    from reward_designer.cli import app

    (tmp_path / "nan.py").write_text(NAN_REWARD)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nan.py"), "--env", "Pendulum-v1", "--steps", "64",
                                      "--out", str(tmp_path / "cli"), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    from_cli = [line[4:] for line in result.output.splitlines() if line.startswith("  - ")]

    from_api = reward_designer.train(NAN_REWARD, "Pendulum-v1", 64, tmp_path / "api").findings

    record = design(load_task("pendulum-upright"), tmp_path / "run", fix_attempts=0, iterations=1, samples=1,
                    replay=replies(tmp_path, [f"```python\n{NAN_REWARD}```"]), **CONFIG)
    from_design = record.candidates[0].findings

    assert from_cli and from_cli == from_api == from_design
    assert record.candidates[0].status == "rejected" and record.candidates[0].stage == "probe"
    # The layout of train's --out is a run's candidate folder.
    for folder in (tmp_path / "cli", tmp_path / "api", tmp_path / "run" / "iter_01" / "cand_00"):
        assert json.loads((folder / "critic.json").read_text())["findings"] == from_design


def test_the_refine_prompt_has_a_line_on_every_other_candidate_of_the_last_round(tmp_path):
    replayed = replies(tmp_path, [program(0.0, broken=True), program(1.0), program(5.0)] + [program(6.0)] * 3,
                       fix=[program(0.0, broken=True)])
    design(load_task("pendulum-upright"), tmp_path / "run", replay=replayed, iterations=2, samples=3,
           fix_attempts=1, executor=FakeExecutor(), **CONFIG)
    prompt = (tmp_path / "run" / "iter_02" / "prompt.md").read_text()
    others = [line for line in prompt.splitlines() if line.startswith("- candidate ")]
    assert others[0].startswith("- candidate 0: rejected by the critic (probe): ") and "broken" in others[0]
    assert others[1] == "- candidate 1: task score 1; components r; analysis: keep going"
    assert len(others) == 2  # the best (candidate 2) is the program shown, not a line


def test_the_summary_flags_a_candidate_whose_reward_is_suspected_of_being_gamed(tmp_path):
    from rich.console import Console

    from reward_designer.records import CandidateRecord, RunConfig, RunRecord

    gamed = CandidateRecord(iteration=1, index=0, status="trained", fitness=0.01, hacking=["rose_alone"])
    honest = CandidateRecord(iteration=1, index=1, status="trained", fitness=3.0)
    record = RunRecord(config=RunConfig(task=load_task("pendulum-upright")), candidates=[gamed, honest], best=honest)
    console = Console(record=True, width=200)
    console.print(Run(tmp_path, record).summary_table())
    rows = {line.split()[1]: line for line in console.export_text().splitlines() if "iter_01/cand_0" in line}
    assert "reward hacking suspected" in rows["iter_01/cand_00"]
    assert "reward hacking suspected" not in rows["iter_01/cand_01"]


def test_the_summary_at_80_columns_folds_only_the_note(tmp_path):
    """A piped or logged run prints at 80 columns: names, statuses, headers and numbers stay whole."""
    from rich.console import Console

    from reward_designer.records import CandidateRecord, RunConfig, RunRecord

    cands = [CandidateRecord(iteration=1, index=0, status="trained", fitness=0.01, correlation=0.97,
                             steps_per_second=14853, hacking=["rose_alone"]),
             CandidateRecord(iteration=12, index=10, status="contained",
                             error="killed by seccomp: the program tried to fork")]
    record = RunRecord(config=RunConfig(task=load_task("halfcheetah-backwards-smoke")), candidates=cands,
                       best=cands[0])
    console = Console(record=True, width=80)
    console.print(Run(tmp_path, record).summary_table())
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    for whole in ("iter_01/cand_00 *", "iter_12/cand_10", "contained", "14853", "0.97", "corr", "steps/s"):
        assert whole in text, whole
