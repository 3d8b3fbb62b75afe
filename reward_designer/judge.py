"""A vision judge (VLM-RM's idea, as CARD and BIRD use a model's eyes): a few stills of a filmed policy
and the task's words go to a vision model, which says whether the behaviour matches the task.

Its verdict is feedback for the next round and a note in the report, never part of the fitness: a
model's impression of eight frames is no measure to select by.
"""

from __future__ import annotations

import base64

from pydantic import BaseModel

from . import templates
from .schemas import TaskSpec


class Judgement(BaseModel):
    """A vision model's verdict on a filmed policy (a candidate's ``judge.json``)."""

    model: str
    verdict: str
    stills: int = 0  # frames it was shown


class Judge:
    """``llm``: a client of a vision model (litellm's image parts: any model that takes them)."""

    def __init__(self, llm, task: TaskSpec):
        self.llm, self.task = llm, task

    def messages(self, stills: list[bytes], seconds: float) -> list[dict]:
        text = templates.render("judge.j2", task=self.task, frames=len(stills), seconds=seconds)
        images = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(s).decode()}}
                  for s in stills]
        return [{"role": "user", "content": [{"type": "text", "text": text}, *images]}]

    def judge(self, stills: list[bytes], seconds: float, tag: str = "") -> Judgement:
        """``stills``: JPEG frames in order, over ``seconds`` of the policy acting."""
        reply = self.llm.complete(self.messages(stills, seconds), n=1, purpose="judge", temperature=0.0, tag=tag)
        return Judgement(model=self.llm.model, verdict=reply[0].text.strip(), stills=len(stills))
