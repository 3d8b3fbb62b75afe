"""Critic: a reward program is checked before any training is spent on it.

(1) static lint, (2) a probe in a sandboxed worker on real states sampled from
rollouts, (3) optionally an LLM review of whether the code does what the task
says (Auto MC-Reward's reward critic). Findings go back to the designer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError, field_validator

from . import templates
from .sandbox import Limits, Outcome
from .executor import Executor, LocalExecutor
from .lint import lint, reads_contacts
from .program import ENTRY
from .schemas import ProbeJob, ProbeResult, TaskSpec

MAX_MS_PER_CALL = 25.0  # per call on the probe batch; training calls it every vector step
SUM_TOLERANCE = 1e-3


class CriticReport(BaseModel):
    ok: bool
    stage: Literal["lint", "probe", "review", "passed"]
    findings: list[str] = []
    probe: ProbeResult | None = None
    sandbox: Outcome | None = None
    review: str = ""  # the LLM reviewer's raw verdict, when asked

    def summary(self) -> str:
        """The findings on one line: each one's last line (a traceback's is the error itself)."""
        return "; ".join(f.strip().splitlines()[-1] for f in self.findings if f.strip())


def probe_findings(p: ProbeResult, entry: str = ENTRY) -> list[str]:
    """What is wrong with a program by what it returned on real states.

    Any other ``entry`` is a fitness: it returns no components, and as a sparse
    success check it is rightly constant (all zeros) on random-action states.
    """
    if not p.ok:
        return [f"it failed on real states:\n{p.error}"]
    reward = entry == ENTRY
    found = []
    if not p.finite:
        which = ", ".join(p.nonfinite) or "the reward or a component"
        at = f", first at {p.nonfinite_at}" if p.nonfinite_at else ""
        found.append(f"it returned NaN or infinite values ({which}) on real states{at}")
    elif reward and p.constant:
        found.append("the reward is the same for every state and action, so it cannot guide learning")
    if reward and p.finite:
        if not p.components:
            found.append("it returned no components: return a dict of the named reward terms")
        elif p.component_sum_gap is not None and p.component_sum_gap > SUM_TOLERANCE * (1 + abs(p.reward_mean or 0.0)):
            found.append(
                f"the components do not sum to the reward (gap up to {p.component_sum_gap:.3g}); "
                "apply weights inside each component"
            )
    if p.ms_per_call > MAX_MS_PER_CALL:
        found.append(f"one call took {p.ms_per_call:.1f} ms on {p.reward_shape} envs; vectorize it (limit {MAX_MS_PER_CALL} ms)")
    return found


class Critic:
    def __init__(
        self,
        env_id: str,
        env_kwargs: dict | None = None,
        llm=None,
        task: TaskSpec | None = None,
        envcard: str = "",
        limits: Limits | None = None,
        seed: int = 0,
        executor: Executor | None = None,
    ):
        self.env_id, self.env_kwargs = env_id, env_kwargs or {}
        self.llm, self.task, self.envcard = llm, task, envcard
        self.limits = limits or Limits(wall_s=60, cpu_s=60, memory_mb=4096)
        self.seed, self.executor = seed, executor or LocalExecutor()

    def check(self, code: str | None, workdir: Path, entry: str = ENTRY, review: bool = True) -> CriticReport:
        """Lint, probe, then (with an LLM and ``review``) the LLM's review; the first stage that
        finds something wrong ends the check."""
        if code is None:
            return CriticReport(ok=False, stage="lint", findings=[f"no Python code defining {entry}() was found in the reply"])
        findings = lint(code, entry=entry)
        if findings:
            return CriticReport(ok=False, stage="lint", findings=findings)
        job = ProbeJob(env_id=self.env_id, env_kwargs=self.env_kwargs, seed=self.seed, code=code, entry=entry,
                       contacts=reads_contacts(code))
        out = self.executor.run(job, workdir, self.limits)
        if out.result is None:
            return CriticReport(ok=False, stage="probe", findings=[out.problem], sandbox=out.sandbox)
        findings = probe_findings(out.result, entry)
        if findings:
            return CriticReport(ok=False, stage="probe", findings=findings, probe=out.result, sandbox=out.sandbox)
        if review and self.llm is not None and self.task is not None:
            return self._review(code, out.result, out.sandbox)
        return CriticReport(ok=True, stage="passed", probe=out.result, sandbox=out.sandbox)

    def _review(self, code: str, probe: ProbeResult, outcome: Outcome) -> CriticReport:
        chat = [{"role": "user", "content": templates.render("critic.j2", task=self.task, envcard=self.envcard,
                                                           code=code, probe=probe)}]
        text = self.llm.complete(chat, n=1, purpose="critic", temperature=0.0)[0].text
        verdict = parse_verdict(text)
        ok = verdict.verdict != "fail"
        findings = [] if ok else verdict.issues or ["the reviewer found it does not match the task"]
        return CriticReport(ok=ok, stage="passed" if ok else "review", findings=findings,
                            probe=probe, sandbox=outcome, review=text)


class Verdict(BaseModel):
    """The reviewer's reply; only a fail (or reject) rejects, any other word passes (the review is advisory)."""

    verdict: str
    issues: list[str] = []

    @field_validator("verdict", mode="before")
    @classmethod
    def _word(cls, v: object) -> str:
        # Its first word: "FAIL.", "Fail: wrong sign", "failed" and "reject" mean fail.
        word = re.match(r"\W*([a-z]*)", str(v).casefold()).group(1)
        return "fail" if word in ("fail", "failed", "failure", "reject", "rejected") else word

    @field_validator("issues", mode="before")
    @classmethod
    def _list(cls, v: object) -> list[str]:
        # Models also answer null or one string; a string must not become one issue per character.
        if v is None:
            return []
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            raise ValueError("issues is not a list")
        return [str(i).strip() for i in v if i is not None and str(i).strip()]


def parse_verdict(text: str) -> Verdict:
    """The first JSON object in the reply that reads as a verdict; an unreadable reply is a pass."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            data, _ = decoder.raw_decode(text, match.start())
            return Verdict.model_validate(data)
        except (json.JSONDecodeError, ValidationError):
            continue
    return Verdict(verdict="pass")
