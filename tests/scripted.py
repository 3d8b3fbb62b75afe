"""A scripted stand-in for an LLM, answering the design loop's prompts by what they ask.

Used by the end-to-end tests behind the loopback OpenAI-compatible server. Its
replies are written by hand for the tests; they are not any model's output.
"""

from __future__ import annotations

GOOD = '''```python
import torch

def compute_reward(state, action):
    forward = state.body("torso").linvel[:, 0]
    ctrl_cost = -0.1 * (action ** 2).sum(dim=-1)
    return forward + ctrl_cost, {"forward": forward, "ctrl_cost": ctrl_cost}
```'''

GOOD_V2 = '''The forward term dominated; I add a small upright bonus.

```python
import torch

def compute_reward(state, action):
    forward = 1.5 * state.body("torso").linvel[:, 0]
    upright = 0.1 * state.body("torso").quat[:, 0].abs()
    ctrl_cost = -0.05 * (action ** 2).sum(dim=-1)
    return forward + upright + ctrl_cost, {"forward": forward, "upright": upright, "ctrl_cost": ctrl_cost}
```'''

SYNTAX_ERROR = '''Here is a reward:

```python
def compute_reward(state, action):
    speed = state.qvel[:, 0]
    return speed, {"speed": speed
```'''

SYNTAX_FIXED = '''Fixed the missing brace.

```python
def compute_reward(state, action):
    speed = state.qvel[:, 0]
    return speed, {"speed": speed}
```'''

NAN = '''```python
import torch

def compute_reward(state, action):
    height = torch.log(state.qpos[:, 1] - 100.0)
    return height, {"height": height}
```'''

FITNESS = '''```python
AGGREGATE = "mean"

def compute_fitness(state, action):
    return state.body("torso").linvel[:, 0]
```'''

FEEDBACK = "- The policy moves forward slowly: raise the weight of `forward`."


def reply(request: dict):
    """The scripted answer to one chat request, chosen by what the prompt asks for."""
    text = "\n".join(m["content"] for m in request["messages"])
    n = request.get("n", 1)
    if "was rejected before any training" in text:
        return SYNTAX_FIXED if "speed" in text else NAN
    if "the measure that we will use to judge" in text:
        return FITNESS
    if "A policy was trained with PPO" in text:
        return FEEDBACK
    if "We trained a policy on the best reward function so far" in text:
        return [GOOD_V2, GOOD][:n]
    return [GOOD, SYNTAX_ERROR, NAN][:n]
