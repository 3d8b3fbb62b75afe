"""The critic on real states of a MuJoCo env, through the sandboxed probe worker."""

import pytest

from reward_designer.critic import Critic, parse_verdict

ENV = "HalfCheetah-v5"

GOOD = """
import torch
def compute_reward(state, action):
    forward = state.body("torso").linvel[:, 0]
    ctrl = -0.1 * (action ** 2).sum(dim=-1)
    return forward + ctrl, {"forward": forward, "ctrl": ctrl}
"""

CASES = {
    "nan": ("import torch\ndef compute_reward(state, action):\n    r = torch.log(state.qpos[:, 1] - 100.0)\n"
            "    return r, {'r': r}\n", "probe", "NaN"),
    "constant": ("import torch\ndef compute_reward(state, action):\n    r = torch.ones(state.n)\n"
                 "    return r, {'r': r}\n", "probe", "same for every state"),
    "no_components": ("def compute_reward(state, action):\n    return state.qvel[:, 0], {}\n", "probe", "no components"),
    "sum_gap": ("def compute_reward(state, action):\n    a = state.qvel[:, 0]\n    return 2 * a, {'a': a}\n",
                "probe", "do not sum"),
    "wrong_shape": ("def compute_reward(state, action):\n    r = state.qvel\n    return r, {'r': r}\n",
                    "probe", "shape"),
    "unknown_body": ("def compute_reward(state, action):\n    r = state.body('head').pos[:, 2]\n"
                     "    return r, {'r': r}\n", "probe", "no body named 'head'"),
    "not_a_tuple": ("def compute_reward(state, action):\n    return state.qvel[:, 0]\n", "probe", "(reward, components)"),
    "syntax": ("def compute_reward(state, action):\n    return (\n", "lint", "syntax"),
    "import_os": ("import os\ndef compute_reward(state, action):\n    r = state.qvel[:, 0]\n    return r, {'r': r}\n",
                  "lint", "os"),
}


@pytest.fixture(scope="module")
def critic():
    return Critic(ENV)


def test_good_program_passes_with_probe_numbers(critic, tmp_path):
    report = critic.check(GOOD, tmp_path / "w")
    assert report.ok and report.stage == "passed", report.findings
    assert set(report.probe.components) == {"forward", "ctrl"}
    assert report.probe.reward_shape == [8] and report.probe.reward_std > 0
    assert report.probe.component_sum_gap < 1e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_programs_are_rejected_with_a_finding(critic, tmp_path, name):
    code, stage, words = CASES[name]
    report = critic.check(code, tmp_path / "w")
    assert not report.ok and report.stage == stage
    assert any(words.lower() in f.lower() for f in report.findings), report.findings


def test_no_code_in_reply(critic, tmp_path):
    report = critic.check(None, tmp_path / "w")
    assert not report.ok and "no Python code" in report.findings[0]


def test_program_that_hangs_is_killed_at_the_deadline(tmp_path):
    from reward_designer.sandbox import Limits

    hang = "def compute_reward(state, action):\n    while True:\n        pass\n"
    report = Critic(ENV, limits=Limits(wall_s=8, cpu_s=30, memory_mb=4096)).check(hang, tmp_path / "w")
    assert not report.ok and report.stage == "probe"
    assert "limit" in report.findings[0] or "killed" in report.findings[0]


def test_fitness_entry_needs_no_components(critic, tmp_path):
    code = "def compute_fitness(state, action):\n    return state.body('torso').linvel[:, 0]\n"
    assert critic.check(code, tmp_path / "w", entry="compute_fitness").ok


def test_sparse_success_check_passes_though_constant_on_random_states(critic, tmp_path):
    # The torso never gets to 1.5 m under random actions: all zeros on the probe, as a success check should be.
    code = "def compute_fitness(state, action):\n    return (state.body('torso').pos[:, 2] > 1.5).float()\n"
    report = critic.check(code, tmp_path / "w", entry="compute_fitness")
    assert report.ok, report.findings
    assert report.probe.constant


FITNESS_CASES = {
    "crash": ("def compute_fitness(state, action):\n    return state.body('head').pos[:, 2]\n", "no body named 'head'"),
    "wrong_shape": ("def compute_fitness(state, action):\n    return state.qvel\n", "shape"),
    "nan": ("import torch\ndef compute_fitness(state, action):\n    return torch.log(state.qpos[:, 1] - 100.0)\n", "NaN"),
}


@pytest.mark.parametrize("name", sorted(FITNESS_CASES))
def test_broken_fitness_is_still_rejected(critic, tmp_path, name):
    code, words = FITNESS_CASES[name]
    report = critic.check(code, tmp_path / "w", entry="compute_fitness")
    assert not report.ok and report.stage == "probe"
    assert any(words.lower() in f.lower() for f in report.findings), report.findings


def test_fix_prompt_names_a_fitness_a_success_check_and_shows_the_task():
    from reward_designer.designer import Designer
    from reward_designer.program import ENTRY, FITNESS_ENTRY
    from reward_designer.schemas import TaskSpec

    class Recorder:
        def complete(self, chat, **kwargs):
            self.chat = chat
            return [type("Reply", (), {"text": ""})()]

    llm = Recorder()
    task = TaskSpec(name="t", env_id="Pendulum-v1", description="swing up and hold")
    designer = Designer(llm, task=task, envcard="class State: ...")
    designer.fix("def compute_fitness(state, action): ...", ["it crashed"], entry=FITNESS_ENTRY)
    text = "\n".join(m["content"] for m in llm.chat)
    assert "success check" in text and "reward function" not in text and "compute_reward" not in text
    assert "swing up and hold" in text and "class State: ..." in text  # the task and the env card
    designer.fix("def compute_reward(state, action): ...", ["it crashed"], entry=ENTRY)
    assert llm.chat[0]["role"] == "system" and "compute_reward" in llm.chat[0]["content"]  # the contract
    assert "reward function" in llm.chat[-1]["content"] and "swing up and hold" in llm.chat[-1]["content"]


def test_llm_review_verdicts():
    fail = parse_verdict('{"verdict": "fail", "issues": ["rewards -x"]}')
    assert (fail.verdict, fail.issues) == ("fail", ["rewards -x"])
    assert parse_verdict("Looks fine.\n```json\n{\"verdict\": \"pass\", \"issues\": []}\n```").verdict == "pass"
    assert parse_verdict("no json at all").verdict == "pass"  # advisory: unreadable is not a rejection


@pytest.mark.parametrize("reply, verdict, issues", [
    ('{"verdict": "fail", "issues": null}', "fail", []),
    ('{"verdict": "fail", "issues": "wrong sign"}', "fail", ["wrong sign"]),
    ('{"verdict": "FAIL.", "issues": ["wrong sign"]}', "fail", ["wrong sign"]),
    ('{"verdict": " Fail! ", "issues": ["wrong sign", null, " "]}', "fail", ["wrong sign"]),
    ('{"verdict": "fail", "issues": ["wrong sign"]}\nIt uses {forward} twice.', "fail", ["wrong sign"]),
    ('It reads {x}. {"verdict": "fail", "issues": ["wrong sign"]}', "fail", ["wrong sign"]),
    ('{"verdict": "FAIL: wrong sign", "issues": []}', "fail", []),
    ('{"verdict": "failed", "issues": ["wrong sign"]}', "fail", ["wrong sign"]),
    ('{"verdict": "Reject", "issues": ["wrong sign"]}', "fail", ["wrong sign"]),
    ('{"verdict": "PASS", "issues": null}', "pass", []),
    ('{"verdict": "passes, but see issues", "issues": ["scale"]}', "passes", ["scale"]),
    ('{"verdict": "fail", "issues": {"sign": 1}}', "pass", []),  # unreadable: advisory, so a pass
    ('{"verdict": "fail", "issues": [', "pass", []),
])
def test_llm_review_odd_replies_are_read_without_crashing(reply, verdict, issues):
    got = parse_verdict(reply)
    assert (got.verdict, got.issues) == (verdict, issues)


def test_llm_review_fail_with_null_issues_rejects_with_a_finding(tmp_path):
    from reward_designer.llm import ReplayClient
    from reward_designer.tasks import load_task

    llm = ReplayClient({"critic": ['{"verdict": "fail", "issues": null}', '{"verdict": "FAIL.", "issues": "wrong sign"}']})
    critic = Critic(ENV, llm=llm, task=load_task("halfcheetah-run"), envcard="class State: ...")
    no_issues = critic.check(GOOD, tmp_path / "a")
    assert not no_issues.ok and no_issues.stage == "review" and no_issues.findings
    one_issue = critic.check(GOOD, tmp_path / "b")
    assert not one_issue.ok and one_issue.findings == ["wrong sign"]


def test_llm_review_can_reject_a_program_that_probes_fine(tmp_path):
    from reward_designer.llm import ReplayClient
    from reward_designer.tasks import load_task

    llm = ReplayClient({"critic": ['{"verdict": "fail", "issues": ["it rewards running towards -x"]}',
                                   '{"verdict": "pass", "issues": []}']})
    critic = Critic(ENV, llm=llm, task=load_task("halfcheetah-run"), envcard="class State: ...")
    rejected = critic.check(GOOD, tmp_path / "a")
    assert not rejected.ok and rejected.stage == "review"
    assert rejected.findings == ["it rewards running towards -x"]
    assert critic.check(GOOD, tmp_path / "b").ok


def test_the_success_check_prompt_describes_the_state_without_the_reward_contract():
    from reward_designer import load_task
    from reward_designer.templates import render

    text = render("fitness.j2", task=load_task("hopper-hop"), envcard="class State: ...")
    assert "compute_fitness" in text and "state.body(name).pos" in text
    assert "compute_reward" not in text and "components" not in text
