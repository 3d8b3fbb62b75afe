"""Reviewing a run: the report (opened in a real headless browser), videos (`play`, `design --videos`),
a feedback round (`refine`, killed and resumed) and the vision judge, all through the loopback LLM
server and the real sandboxed workers, on one tiny InvertedPendulum run."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import imageio.v3 as iio
import pytest
from typer.testing import CliRunner

from fake_openai import FakeOpenAI
from reward_designer import design, load_task
from reward_designer.cli import app
from reward_designer.pipeline import CandidatePipeline
from reward_designer.run import JUDGE_STILLS

FIRST = """```python
import torch

def compute_reward(state, action):
    upright = 1.0 - state.joint("hinge").qpos.abs()
    effort = -0.01 * (action ** 2).sum(dim=-1)
    return upright + effort, {"upright": upright, "effort": effort}
```"""
REFINED = """```python
import torch

def compute_reward(state, action):
    upright = 1.0 - state.joint("hinge").qpos.abs()
    centred = -0.5 * state.qpos[:, 0].abs()
    return upright + centred, {"upright": upright, "centred": centred}
```"""
EDIT = """import torch

def compute_reward(state, action):
    upright = 2.0 - state.joint("hinge").qpos.abs()
    effort = -0.01 * (action ** 2).sum(dim=-1)
    return upright + effort, {"upright": upright, "effort": effort}
"""
FEEDBACK = "keep the cart near the middle of the rail"
VERDICT = "VERDICT: partly. SEEN: the pole tips over within a second while the cart slides right."
# Words from an LLM land in the page as text: this one's markup must neither run nor break the page.
ANALYSIS = "- The pole falls within a few steps: weight the angle more. </pre><script>console.error('ran')</script>"
CONFIG = dict(iterations=1, samples=1, train_steps=512, episodes=1, device="cpu", ppo={"num_envs": 4, "num_steps": 64})


def answer(request: dict) -> str:
    """The loopback LLM: the judge gets image parts, the designer a system message, the analyzer neither."""
    messages = request["messages"]
    if isinstance(messages[-1]["content"], list):
        return VERDICT
    if messages[0]["role"] == "system":
        return REFINED if FEEDBACK in messages[-1]["content"] else FIRST
    return ANALYSIS


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    """A run with videos and a judge, then a feedback round with a hand edit that is killed at its
    training and resumed: (run folder, the LLM requests, the refine's and the resume's exit codes)."""
    tmp = tmp_path_factory.mktemp("reviewed")
    folder, edit = tmp / "run", tmp / "edited.py"
    edit.write_text(EDIT)
    real = CandidatePipeline.train_and_analyze
    killed = []

    def killed_in_training(self, cand, program, iteration=0, *args, **kwargs):
        if iteration == 2 and not killed:
            killed.append(True)
            raise KeyboardInterrupt  # as a Ctrl-C while the feedback round trains
        return real(self, cand, program, iteration, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp, FakeOpenAI(answer) as server:
        mp.setenv("OPENAI_API_KEY", "sk-test")
        mp.setenv("MUJOCO_GL", "egl")
        design(load_task("inverted-pendulum-balance"), folder, model="openai/designer", api_base=server.base_url,
               videos=True, judge="openai/vision-judge", judge_api_base=server.base_url, **CONFIG)
        mp.setattr(CandidatePipeline, "train_and_analyze", killed_in_training)
        refined = invoke("refine", folder, "--feedback", FEEDBACK, "--edit", edit, "-q")
        resumed = invoke("resume", folder, "-q")
        requests = server.chat_requests
    return folder, requests, refined, resumed


def test_refine_puts_the_feedback_and_the_edit_in_the_prompt_and_survives_a_kill(reviewed):
    folder, requests, refined, resumed = reviewed
    assert refined.exit_code == 130 and "resume" in refined.output
    assert resumed.exit_code == 0, resumed.output
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "done" and record["config"]["iterations"] == 2
    assert record["feedback"] == [{"round": 2, "text": FEEDBACK, "from": "iter_01/cand_00", "edit": "iter_02/edit",
                                   "created": record["feedback"][0]["created"]}]
    second = [c for c in record["candidates"] if c["iteration"] == 2]
    assert [(c["status"], c["parent"]) for c in second] == [("trained", "iter_02/edit")]
    # The round's design call was made once: the resume read it back from the cache.
    asked = [r for r in requests if r["messages"][0]["role"] == "system" and FEEDBACK in r["messages"][-1]["content"]]
    assert len(asked) == 1
    prompt = asked[0]["messages"][-1]["content"]
    assert "2.0 - state.joint(\"hinge\")" in prompt  # the edited program is the one to refine
    assert "edited the reward function above by hand" in prompt
    assert VERDICT in prompt  # the judge's verdict on round 1's best
    assert FEEDBACK in (folder / "iter_02" / "prompt.md").read_text()
    assert (folder / "iter_02" / "cand_00" / "reward.py").read_text().strip() in REFINED


def test_an_edit_the_critic_rejects_is_refused_and_not_recorded(reviewed, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(reviewed[0], folder)
    before = (folder / "run.json").read_text()
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\ndef compute_reward(state, action):\n    r = state.qpos[:, 0] / 0.0\n"
                   "    return r, {'r': r}\n")
    result = invoke("refine", folder, "--feedback", "try this", "--edit", bad, "-q")
    assert result.exit_code == 1 and "rejected by the critic" in result.output
    assert (folder / "run.json").read_text() == before
    for args, words in [(["--feedback", "x", "--from", "iter_09/cand_00"], "trained: iter_01/cand_00, iter_02/cand_00"),
                        ([], "--feedback")]:
        result = invoke("refine", folder, *args)
        assert result.exit_code == 2 and words in result.output


def test_the_judge_is_sent_stills_of_the_best_policy_and_is_never_scored(reviewed):
    folder, requests, _, _ = reviewed
    judged = [r for r in requests if isinstance(r["messages"][-1]["content"], list)]
    assert len(judged) == 2 and {r["model"] for r in judged} == {"vision-judge"}  # one per round's best
    text, *images = judged[0]["messages"][-1]["content"]
    assert text["type"] == "text" and load_task("inverted-pendulum-balance").description in text["text"]
    assert len(images) == JUDGE_STILLS and all(p["type"] == "image_url" for p in images)
    url = images[0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert iio.imread(base64.b64decode(url.partition(",")[2]), extension=".jpg").shape == (320, 480, 3)
    judgement = json.loads((folder / "iter_01" / "cand_00" / "judge.json").read_text())
    assert judgement == {"model": "openai/vision-judge", "verdict": VERDICT, "stills": JUDGE_STILLS}
    record = json.loads((folder / "run.json").read_text())
    analysis = json.loads((folder / "iter_01" / "cand_00" / "analysis.json").read_text())
    assert record["candidates"][0]["fitness"] == analysis["fitness_mean"]  # the rollout's, untouched
    assert VERDICT not in json.dumps(analysis)


def test_play_writes_an_mp4_of_the_episodes_asked(reviewed, tmp_path):
    folder = reviewed[0]
    out = tmp_path / "clip.mp4"
    result = invoke("play", folder, "--candidate", "iter_01/cand_00", "--episodes", 2, "--out", out)
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    said = re.search(r"(\d+) frames at [\d.]+ fps, episodes of (\d+), (\d+) steps", result.output)
    frames, first, second = map(int, said.groups())
    assert frames == first + second + 2 > 2  # each episode's reset frame, then one per step
    assert iio.imread(out, index=None).shape == (frames, 320, 480, 3)
    result = invoke("play", folder, "--candidate", "iter_07/cand_00")
    assert result.exit_code == 2 and "trained: iter_01/cand_00, iter_02/cand_00" in result.output
    result = invoke("play", folder, "--candidate", "../../etc")
    assert result.exit_code == 2


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def of(self, tag: str, cls: str | None = None) -> list[dict]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in (a.get("class") or "").split())]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless chromium on a page from disk, offline, its console on stderr."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars"]
    return subprocess.run([chromium(), *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=120)


def test_the_report_opens_in_a_browser_with_code_diffs_curves_and_videos(reviewed, tmp_path):
    if chromium() is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    folder = reviewed[0]
    result = invoke("report", folder)
    assert result.exit_code == 0, result.output
    page = Path(result.output.strip().splitlines()[-1])
    assert page == folder / "report.html" and page.stat().st_size < 1_000_000

    shot = tmp_path / "report.png"
    shown = browse(page, tmp_path / "profile-1", f"--screenshot={shot}", "--window-size=1280,2400")
    dom = browse(page, tmp_path / "profile-2", "--dump-dom", "--virtual-time-budget=3000")
    for proc in (shown, dom):
        assert proc.returncode == 0, proc.stderr[-2000:]
        console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
        assert not console, console
    assert iio.imread(shot).shape[:2] == (2400, 1280)
    if os.environ.get("RD_REPORT_SCREENSHOT"):  # where a person wants to look at it
        shutil.copyfile(shot, os.environ["RD_REPORT_SCREENSHOT"])

    seen = Elements()
    seen.feed(dom.stdout)
    videos = seen.of("video")
    assert [v["src"] for v in videos[:2]] == ["iter_01/cand_00/video.mp4", "iter_02/cand_00/video.mp4"]
    for v in videos:
        assert iio.imread(folder / v["src"], index=0).shape == (320, 480, 3)  # beside the page, and playable
    assert len(seen.of("svg")) >= 2  # a candidate's training curves each
    ids = [a["id"] for _, a in seen.tags if "id" in a]
    assert len(ids) == len(set(ids))  # each inline figure's tick marks are its own
    assert len(seen.of("div", "hl")) >= 4  # code and diffs, highlighted at build time
    assert not seen.of("script") and not [a for t, a in seen.tags if t == "link"]  # nothing to fetch or run
    text = dom.stdout
    assert "centred" in text and "Diff against iter_02/edit" in text and "Round 2" in text
    assert FEEDBACK in text and "VERDICT: partly" in text and ANALYSIS.strip("- ")[:20] in text
    assert "★ best" in text


def test_a_render_worker_cannot_point_the_parent_at_another_file():
    from pydantic import ValidationError

    from reward_designer.schemas import RenderResult

    assert RenderResult(ok=True, stills=["still_00.jpg", "still_07.jpg"]).stills == ["still_00.jpg", "still_07.jpg"]
    for name in ("../../run.json", "/etc/passwd", "still_00.jpg/../x", "still_0.jpg"):
        with pytest.raises(ValidationError):
            RenderResult(ok=True, stills=[name])


def test_a_report_of_no_run_is_one_line():
    result = invoke("report", "/nonexistent/run")
    assert result.exit_code == 2 and "no run" in result.output
