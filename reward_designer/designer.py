"""Designer: prompts in, candidate reward programs out."""

from __future__ import annotations

from . import templates
from .program import ENTRY, NO_CODE, RewardProgram, extract_code
from .schemas import TaskSpec


class Designer:
    """Asks the LLM for K programs a round, and for fixes of rejected ones.

    Round 1 sees the task, the env card and the contract; later rounds also
    see the best program so far, its reflection numbers and the analyzer's
    feedback. Replies with no usable code come back as None, which the
    critic turns into a finding.
    """

    def __init__(self, llm, task: TaskSpec, envcard: str, temperature: float = 1.0):
        self.llm, self.task, self.envcard, self.temperature = llm, task, envcard, temperature

    def first_round_messages(self) -> list[dict]:
        return templates.messages("designer.j2", task=self.task, envcard=self.envcard)

    def refine_messages(self, best: dict, feedback: str, others: list[dict], person=None, judge: str = "") -> list[dict]:
        """``person``: a person's ``records.Feedback`` for this round (``refine``); ``judge``: a vision
        model's verdict on the best's policy."""
        return templates.messages("refine.j2", task=self.task, envcard=self.envcard,
                                  best=best, feedback=feedback, others=others, person=person, judge=judge)

    def propose(self, k: int, messages: list[dict], tag: str = "", parent: str | None = None) -> list[RewardProgram]:
        """``tag``: where in the run this is asked (see ``LLMClient.complete``); ``parent``: the
        candidate the messages ask to refine."""
        replies = self.llm.complete(messages, n=k, purpose="design", temperature=self.temperature, tag=tag)
        return [RewardProgram(code=extract_code(r.text, ENTRY), parent=parent) for r in replies]

    def fix(self, code: str | None, findings: list[str], entry: str = ENTRY, tag: str = "") -> str | None:
        # A success check is no reward: it gets no reward contract as its system message.
        chat = templates.messages("fixer.j2", system=entry == ENTRY, code=code or NO_CODE, findings=findings,
                                  entry=entry, task=self.task, envcard=self.envcard)
        reply = self.llm.complete(chat, n=1, purpose="fix", temperature=0.3, tag=tag)[0].text
        return extract_code(reply, entry)
