"""Faults and bad input (issue 32): bounded prompts and cards, one-line errors that say what to fix."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from test_cli import ROOT, one_line_exit_2, run

from reward_designer import templates
from reward_designer.critic import probe_findings
from reward_designer.schemas import MAX_DESCRIPTION_CHARS, ProbeResult, TaskSpec
from reward_designer.tasks import MAX_CARD_BYTES, TaskError, expanded_size, load_task, parse_card, task_from_flags

CARD = "name: x\nenv_id: Pendulum-v1\ndescription: swing up\n"
TASK = TaskSpec(name="x", env_id="Pendulum-v1", description="swing up")


# ------------------------------------------------------------ 1: what goes back into a prompt
def test_a_2mb_program_goes_back_to_the_fixer_cut_with_a_marker():
    head, tail = "# HEAD OF THE PROGRAM\n", "\n# TAIL OF THE PROGRAM"
    code = head + "x = 1\n" * (2_000_000 // 6) + tail
    chat = templates.messages("fixer.j2", code=code, findings=["the program is over 20,000 characters"],
                              task=TASK, envcard="class State: ...", entry="compute_reward")
    user = chat[-1]["content"]
    assert len(user) < templates.MAX_VALUE_CHARS + 2000
    cut = len(code) - templates.MAX_VALUE_CHARS
    assert f"[... cut {cut:,} characters ...]" in user
    assert head in user and tail in user  # a program's start and a traceback's end are what matter
    assert "the program is over 20,000 characters" in user and "Fix it" in user


def test_every_value_a_template_writes_is_bounded_and_small_ones_are_untouched():
    reflection = "the policy fell over. " * 100_000
    text = templates.render("refine.j2", task=TASK, envcard="E", feedback="f" * 1_000_000, others=[],
                            best={"trained_steps": 10, "code": "c" * 500_000, "episodes": 3,
                                  "reflection": reflection})
    assert len(text) < 3 * templates.MAX_VALUE_CHARS + 2000
    assert text.count("[... cut ") == 3
    assert templates.bound("short") == "short" and templates.bound(3.5) == 3.5
    assert templates.bound("abcdefghij", 4) == "ab\n[... cut 6 characters ...]\nij"
    many = templates.render("fixer.j2", code="c", findings=[f"finding {i}: " + "x" * 9000 for i in range(50)],
                            task=TASK, envcard="E", entry="compute_reward")
    assert "finding 19" in many and "finding 20" not in many and "- and 30 more" in many
    assert len(many) < 20 * 4100 + 2000


def test_a_huge_task_description_is_a_clear_error():
    with pytest.raises(ValidationError, match=f"at most {MAX_DESCRIPTION_CHARS:,}"):
        TaskSpec(name="x", env_id="Pendulum-v1", description="swing up " * 6_000_000)  # ~50 MB
    with pytest.raises(TaskError) as exc:
        task_from_flags("x", "Pendulum-v1", "d" * 20_000)
    assert str(exc.value).startswith("--task: the task description is 20,000 characters")
    assert len(str(exc.value)) < 300
    card = f"name: x\nenv_id: Pendulum-v1\ndescription: {'d' * 20_000}\n"
    with pytest.raises(TaskError, match="description: the task description is 20,000 characters") as exc:
        parse_card(card, "big.yaml")
    assert len(str(exc.value)) < 400
    with pytest.raises(TaskError, match="larger than a task card can be"):
        parse_card(CARD + "# " + "x" * MAX_CARD_BYTES, "huge.yaml")
    assert TaskSpec(name="x", env_id="P", description="  walk  ").description == "walk"


# ------------------------------------------------------------ 2: alias bombs
def bomb(where: str) -> str:
    """Nine lists of nine, each of the one before: 9**9 values once expanded."""
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    anchors = "\n".join("  " + ln for ln in lines)
    if where == "top":
        return CARD + "anchors:\n" + anchors + "\nbomb: *a8\n"
    return CARD + f"{where}:\n  anchors:\n" + textwrap.indent(anchors, "  ") + "\n  bomb: *a8\n"


@pytest.mark.parametrize("where", ["top", "env_kwargs", "ppo"])
def test_an_alias_bomb_card_is_refused_in_under_a_second_and_100_mb(tmp_path, where):
    card = tmp_path / "bomb.yaml"
    card.write_text(bomb(where))
    probe = textwrap.dedent(f"""
        import json, time, tracemalloc
        from reward_designer.tasks import TaskError, load_task
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            load_task({str(card)!r})
            message = None
        except TaskError as exc:
            message = str(exc)
        print(json.dumps({{"seconds": time.perf_counter() - t0, "peak": tracemalloc.get_traced_memory()[1],
                          "message": message}}))
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["message"] and "aliases" in got["message"] and len(got["message"]) < 300
    assert got["seconds"] < 1.0 and got["peak"] < 100 * 2**20, got
    one_line_exit_2(run("design", str(card), "--replay", "x.yaml"), "aliases")


def test_expanded_size_counts_shared_values_without_expanding_them():
    shared = [1, 2, 3]
    assert expanded_size({"a": shared, "b": [shared, shared]}) == 1 + 4 + (1 + 4 + 4)
    loop: list = []
    loop.append(loop)
    assert expanded_size(loop, limit=10) > 10  # a list that holds itself never ends
    with pytest.raises(TaskError, match="aliases"):
        parse_card(CARD + "env_kwargs: &a {k: [*a]}\n", "loop.yaml")
    assert parse_card(CARD + "env_kwargs: {a: &x [1, 2], b: *x}\n", "ok.yaml").env_kwargs == {"a": [1, 2], "b": [1, 2]}


def test_a_huge_set_value_is_refused_before_it_is_parsed(tmp_path):
    reward = tmp_path / "r.py"
    reward.write_text("def compute_reward(state, action):\n    return state.obs[:, 0], {}\n")
    proc = run("train", str(reward), "--env", "Pendulum-v1", "--set", "hidden=(" + "1," * 50_000 + ")")
    one_line_exit_2(proc, "--set", "at most 1,000")
    assert len(proc.stderr) < 500


# ------------------------------------------------------------ 6, 7: card errors
def test_a_card_error_shows_every_field_and_a_yaml_position(tmp_path):
    with pytest.raises(TaskError) as exc:
        parse_card("name: x\nenv: Pendulum-v1\ndescription: d\n", "c.yaml")
    assert "env_id: Field required" in str(exc.value)
    assert "env: Extra inputs are not permitted (did you mean env_id?)" in str(exc.value)
    misindented = CARD + "ppo:\n  gamma: 0.99\n   lr: 0.001\n"
    with pytest.raises(TaskError, match=r"not valid YAML \(line 6, column 6: mapping values are not allowed here\)"):
        parse_card(misindented, "c.yaml")
    many = CARD + "".join(f"extra_field_{i}: {'v' * 5000}\n" for i in range(30))
    with pytest.raises(TaskError) as exc:
        parse_card(many, "c.yaml")
    message = str(exc.value)
    assert "extra_field_0:" in message and "extra_field_9:" in message and "extra_field_10:" not in message
    assert "and 20 more" in message and "vvvv" not in message and len(message) < 3000
    card = tmp_path / "card.yaml"
    card.write_text("name: x\nenv: Pendulum-v1\ndescription: d\n")
    one_line_exit_2(run("design", str(card), "--replay", "x.yaml"), "env_id: Field required",
                    "env: Extra inputs are not permitted")


def test_a_card_that_is_not_utf8_is_one_line_and_exit_2(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_bytes(b"name: x\nenv_id: Pendulum-v1\ndescription: \xff\xfe swing\n")
    one_line_exit_2(run("design", str(card), "--replay", "x.yaml"), "card.yaml", "not UTF-8")


# ------------------------------------------------------------ 9: suggestions
def test_a_typo_gets_a_suggestion(tmp_path):
    one_line_exit_2(run("design", "--env", "Walker2D-v5", "--task", "walk", "--model", "openai/x",
                        "--out", str(tmp_path / "r")), "unknown environment id 'Walker2D-v5'",
                    "did you mean Walker2d-v5?")
    one_line_exit_2(run("check", "examples/my_reward.py", "--env", "halfcheetah-v5", cwd=ROOT),
                    "did you mean HalfCheetah-v5?")
    one_line_exit_2(run("design", "walker-rn", "--model", "openai/x"), "no task card named 'walker-rn'",
                    "did you mean walker-run?")
    with pytest.raises(TaskError, match=r"did you mean hopper-hop\?"):
        load_task("Hopper-Hop")
    with pytest.raises(TaskError) as exc:
        load_task("zzzz")
    assert "did you mean" not in str(exc.value)


# ------------------------------------------------------------ 10: non-finite rewards
NAN_REWARD = """\
import torch
def compute_reward(state, action):
    speed = state.obs[:, 0]
    ratio = speed / (state.qpos[:, 0] - state.qpos[:, 0])
    effort = -(action ** 2).sum(dim=-1)
    return speed + ratio + effort, {"speed": speed, "ratio": ratio, "effort": effort}
"""


@pytest.mark.nobwrap
def test_a_nan_reward_names_the_component_and_the_state(tmp_path):
    reward = tmp_path / "nan.py"
    reward.write_text(NAN_REWARD)
    proc = run("check", str(reward), "--env", "HalfCheetah-v5", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    probe = report["probe"]
    assert probe["finite"] is False and set(probe["nonfinite"]) == {"reward", "ratio"}
    at = probe["nonfinite_at"]
    assert at.startswith("probe step 0, env 0 (") and "ratio=" in at
    for part in ("obs [", "qpos [", "qvel [", "action ["):
        assert part in at, at
    (finding,) = report["findings"]
    assert "(reward, ratio)" in finding and "effort" not in finding and "qpos [" in finding

    from reward_designer.critic import Critic

    fitness = "import torch\ndef compute_fitness(state, action):\n    return torch.log(state.obs[:, 0] - 100.0)\n"
    checked = Critic("Pendulum-v1").check(fitness, tmp_path / "f", entry="compute_fitness")
    assert not checked.ok and checked.probe.nonfinite == ["fitness"], checked.findings
    assert "(fitness) on real states, first at probe step 0, env 0 (fitness=nan): obs [" in checked.findings[0]


def test_probe_findings_without_the_state_and_bounded_results():
    old = ProbeResult(ok=True, finite=False)
    assert probe_findings(old) == ["it returned NaN or infinite values (the reward or a component) on real states"]
    p = ProbeResult(ok=True, finite=False, nonfinite=["reward", "x"], nonfinite_at="s" * 10_000)
    assert len(p.nonfinite_at) == 1000
    with pytest.raises(ValidationError):
        ProbeResult(ok=True, nonfinite=[f"c{i}" for i in range(100)])


# ------------------------------------------------------------ 11: exit codes
@pytest.mark.nobwrap
def test_a_syntax_error_is_a_critic_rejection_exit_1_and_bad_input_is_2(tmp_path):
    bad = tmp_path / "reward.py"
    bad.write_text("def compute_reward(state, action:\n    return 1\n")
    proc = run("check", str(bad), "--env", "Pendulum-v1")
    assert proc.returncode == 1, proc.stderr
    assert "rejected at lint" in proc.stderr and "syntax error" in proc.stderr
    report = json.loads(run("check", str(bad), "--env", "Pendulum-v1", "--json").stdout)
    assert report["ok"] is False and report["stage"] == "lint"
    proc = run("train", str(bad), "--env", "Pendulum-v1", "--out", str(tmp_path / "t"))
    assert proc.returncode == 1 and "syntax error" in proc.stderr, proc.stderr
    one_line_exit_2(run("check", str(tmp_path / "missing.py"), "--env", "Pendulum-v1"), "cannot read")
    fitness = tmp_path / "fitness.py"
    fitness.write_text("def compute_fitness(state, action:\n")
    one_line_exit_2(run("train", str(bad), "--env", "Pendulum-v1", "--fitness", str(fitness)), "not valid Python")


def test_readme_help_and_docstring_say_the_same_exit_codes():
    import re

    from reward_designer import cli

    def words(text: str) -> str:
        return " ".join(text.replace("`", "").replace("│", " ").split())

    readme = re.search(r"- (Exit codes:.*?)\n(?:- |\n)", (ROOT / "README.md").read_text(), re.S).group(1)
    doc = cli.__doc__.partition("\n\n")[2]
    assert words(readme) == words(doc)
    assert words(doc) in words(run("--help", env={"COLUMNS": "200"}).stdout)
    assert "a syntax error included" in doc


# ------------------------------------------------------------ 12: what resume repeats
def test_the_docs_say_resume_resends_only_the_call_in_flight():
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "the only call sent again is one that was in flight at the moment of the kill" in readme
    helps = run("resume", "--help", env={"COLUMNS": "200"}).stdout
    for text in (readme, " ".join((ROOT / "docs" / "ARCHITECTURE.md").read_text().split()), " ".join(helps.split())):
        assert "no LLM call is repeated" not in text and "repeats no call" not in text
