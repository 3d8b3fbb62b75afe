"""What the user sees around a run: --name, a folder that is not a run, extending a finished run,
the LLM's measure shown before the search (the jobs run on the in-process fake executor)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from fake_executor import FakeExecutor, program
from reward_designer.cli import app

FITNESS = ("```python\n# measures: the pendulum's uprightness, cos(theta), mean per step\nAGGREGATE = \"mean\"\n\n"
           "def compute_fitness(state, action):\n    return state.obs[:, 0]\n```")
SMALL = ["--train-steps", "64", "--device", "cpu", "-q", "--set", "num_envs=4", "--set", "num_steps=16"]


@pytest.fixture(autouse=True)
def fake_jobs(monkeypatch):
    """Every run the CLI starts runs its jobs on a fresh fake executor."""
    monkeypatch.setattr("reward_designer.run.LocalExecutor", lambda *args, **kwargs: FakeExecutor())


def replies(tmp_path, rounds: int) -> str:
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"fitness": [FITNESS], "design": [program(float(i)) for i in range(1, rounds + 1)],
                                    "analyze": ["- keep going"] * rounds}))
    return str(path)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_command_line_task_takes_a_name_and_its_llm_measure_is_shown_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("design", "--env", "Pendulum-v1", "--task", "swing up and balance", "--name", "swing-up",
                    "--replay", replies(tmp_path, 1), "--iterations", 1, "--samples", 1, *SMALL)
    assert result.exit_code == 0, result.output
    assert "The LLM wrote the task's measure" in result.output and "def compute_fitness" in result.output
    saved = json.loads((tmp_path / "runs" / "swing-up" / "run.json").read_text())
    assert saved["config"]["task"]["name"] == "swing-up"
    assert saved["fitness"]["description"] == "the pendulum's uprightness, cos(theta), mean per step"
    assert saved["fitness"]["source"] == "llm"
    for bad in ("../up", "a b", ""):
        result = invoke("design", "--env", "Pendulum-v1", "--task", "swing up", "--name", bad,
                        "--replay", replies(tmp_path, 1), *SMALL)
        assert result.exit_code == 2 and "--name" in result.output


def test_design_refuses_a_folder_that_holds_files_but_no_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    result = invoke("design", "pendulum-upright", "--replay", replies(tmp_path, 1), "--out", tmp_path / "mine",
                    *SMALL)
    assert result.exit_code == 2 and "holds files but no run" in result.output
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_resume_extends_a_finished_run_by_a_round_asking_only_the_new_round(tmp_path):
    run = tmp_path / "run"
    assert invoke("design", "pendulum-upright", "--replay", replies(tmp_path, 2), "--iterations", 1,
                  "--samples", 1, "--out", run, *SMALL).exit_code == 0
    assert json.loads((run / "run.json").read_text())["status"] == "done"

    result = invoke("resume", run, "--iterations", 2, "-q")
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "run.json").read_text())
    assert saved["config"]["iterations"] == 2 and saved["status"] == "done"
    assert sorted(c["iteration"] for c in saved["candidates"]) == [1, 2]
    calls = [json.loads(line) for line in (run / "llm" / "calls.jsonl").read_text().splitlines()]
    asked = [(c["purpose"], c["tag"]) for c in calls if not c["cached"]]
    assert len(asked) == len(set(asked))  # no call was made twice
    assert [tag for purpose, tag in asked if purpose == "design"] == ["iter_01", "iter_02"]

    result = invoke("resume", run, "--iterations", 1)
    assert result.exit_code == 2 and "would drop some" in result.output


def test_a_huge_task_or_a_bad_replay_file_is_one_line(tmp_path):
    result = invoke("design", "--env", "Pendulum-v1", "--task", "swing up " * 2000, "--replay",
                    replies(tmp_path, 1), *SMALL)
    assert result.exit_code == 2 and result.output.startswith("error: --task: ") and "Traceback" not in result.output
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("design: [\"caf\xe9\"]\n".encode("latin-1"))
    for path, said in ((bomb, "expands to over"), (latin, "not UTF-8")):
        result = invoke("design", "pendulum-upright", "--replay", path, "--out", tmp_path / path.stem, *SMALL)
        assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output


def test_tasks_lists_every_card_with_its_suites_and_anchors(tmp_path, monkeypatch):
    from rich.console import Console

    from reward_designer import cli
    from reward_designer.tasks import list_tasks

    # A console fixes its width when made if COLUMNS is set then (pytest-xdist's workers set 80).
    monkeypatch.setattr(cli, "out", Console(width=200))
    result = invoke("tasks")
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    cards = list_tasks()
    assert all(card.name in rows for card in cards) and len(cards) >= 20
    assert "smoke" in rows["pendulum-upright"] and "standard" not in rows["pendulum-upright"]
    assert "locomotion" in rows["hopper-hop"] and "standard" in rows["hopper-hop"]
    assert all("not measured" in rows[c.name] for c in cards if not c.anchors)
