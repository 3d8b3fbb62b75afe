"""The static filter: good programs pass untouched, bad ones get a finding the LLM can act on."""

import pytest

from reward_designer.lint import lint

GOOD = '''
"""Run forward without wasting torque."""
from __future__ import annotations
import math
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from typing import Dict
from reward_designer.state import State

TARGET_SPEED = 1.5
WEIGHTS = {"forward": 1.0, "ctrl": 0.1}


def _gauss(x, width=0.5):
    return torch.exp(-(x / width) ** 2)


def compute_reward(state: State, action: torch.Tensor):
    v = state.body("torso").linvel[:, 0]
    ctrl = WEIGHTS["ctrl"] * (action ** 2).sum(-1)
    q = state.qpos.clone()
    q[:, 0] = 0.0
    height = F.relu(q[:, 1]) + math.pi * 0
    speed = _gauss(v - TARGET_SPEED)
    with torch.no_grad():
        r = torch.clamp(speed - ctrl + 0.0 * height, -10.0, 10.0)
    r = r + float(np.sqrt(4.0)) * 0
    return r, {"speed": speed, "ctrl": -ctrl}
'''


def test_a_typical_reward_passes():
    assert lint(GOOD) == []


def test_what_a_review_found_wrongly_refused_passes():
    src = (
        '"""Reaching with `__matmul__` in the docstring."""\n'
        "import torch\nimport numpy as np\nimport torch.distributions as D\nfrom torch.distributions import Normal\n"
        "def compute_reward(state, action):\n"
        "    a = action.clone().clamp_(-1, 1)\n"
        "    keep = np.setdiff1d(np.arange(4), np.array([1]))\n"
        "    lp = Normal(0.0, 1.0).log_prob(state.obs[:, 0]) + D.Normal(0.0, 2.0).log_prob(a[:, 0])\n"
        "    return lp + float(keep.sum()) * 0, {'lp': lp}\n")
    assert lint(src) == []


def test_math_namespaces_under_allowed_modules_pass():
    body = ("x = torch.linalg.norm(state.obs, dim=-1) + torch.special.expit(state.obs).sum(-1)"
            " + float(np.linalg.norm(np.fft.rfft(np.random.rand(4))))")
    assert lint("import torch\nimport numpy as np\n" + ENTRY.format(body)) == []


def _one(src: str) -> str:
    findings = lint(src)
    assert findings, src
    return " ".join(findings)


ENTRY = "def compute_reward(state, action):\n    {}\n    return state.obs[:, 0], {{}}\n"


@pytest.mark.parametrize(
    "body, expect",
    [
        ('open("/etc/passwd")', "`open`"),
        ('eval("1")', "`eval`"),
        ('exec("x=1")', "`exec`"),
        ('compile("1", "", "eval")', "`compile`"),
        ('getattr(state, "obs")', "`getattr`"),
        ('setattr(state, "dt", 0)', "`setattr`"),
        ("globals()", "`globals`"),
        ("vars(state)", "`vars`"),
        ("breakpoint()", "`breakpoint`"),
        ("x = ().__class__", "Dunder attribute `.__class__`"),
        ("x = __builtins__", "Dunder names"),
        ('__import__("os")', "Dunder names"),
        ("x = state._physics", "Private attribute `._physics`"),
        ('x = "{0.__class__}".format(1)', "dunder"),
        ("g = (i for i in []); x = g.gi_frame.f_back", "`.gi_frame`"),
        ("x = torch.load", "`torch.load`"),
        ("x = torch.utils.cpp_extension", "`torch.utils`"),
        ("torch.set_num_threads(8)", "`torch.set_num_threads`"),
        ("np.random.seed(0)", "`numpy.random.seed`"),
        ("x = state.obs.numpy().ctypes", "`.ctypes`"),
        ("torch.sum = None", "Assigning to attributes"),
        ("state.dt = 0", "Assigning to attributes"),
        ("state.obs[:] = 0", "Do not write into `state`"),
        ("action.mul_(0)", "`.mul_()` modifies `action`"),
        ("state.qpos.zero_()", "`.zero_()` modifies `state`"),
        # Modules handed out as attributes of allowed ones, and the paths they lead to.
        ('torch.os.system("id")', "`torch.os` is the module `os`"),
        ("x = typing.sys.modules", "`typing.sys` is the module `sys`"),
        ("x = reward_designer.program.load_function", "the module `reward_designer.program`"),
        ('x = np.rec.fromfile("x")', "the module `numpy.rec`"),
        ("x = np.core.records", "the module `numpy.core`"),
        ("x = torch.compiler.reset", "the module `torch.compiler`"),
        ("x = torch.nn.modules.module.register_module_forward_hook", "the module `torch.nn.modules`"),
        ('x = torch.UntypedStorage.from_file("x")', "`.from_file`"),
        ('x = type("A", (), {})', "`type`"),
        ('x = typing.get_type_hints(compute_reward)', "`typing.get_type_hints`"),
        ('x = typing.ForwardRef("1")', "`typing.ForwardRef`"),
        ("np.random.set_state(None)", "`numpy.random.set_state`"),
        ("torch.default_generator.manual_seed(0)", "`torch.default_generator`"),
        ("torch.distributions.Distribution.set_default_validate_args(False)", "set_default_validate_args"),
        ("np.setbufsize(8192)", "`numpy.setbufsize`"),
        # A module bound to another name, or handed through a value, escapes the path checks.
        ("m = [torch][0]; x = m.getcwd()", "Use the module `torch` only as `torch.name`"),
        ("x = (m := np).load", "Use the module `np` only as `np.name`"),
        ("x = typing.cast(typing.Any, torch)", "Use the module `torch` only as `torch.name`"),
        ("x = [torch][0].os", "Attribute `.os`"),
        ("x = state.obs.sys.modules", "Attribute `.sys`"),
    ],
)
def test_forbidden_constructs(body, expect):
    src = "import torch\nimport numpy as np\nimport typing\nimport reward_designer.state\n" + ENTRY.format(body)
    assert expect in _one(src)


@pytest.mark.parametrize(
    "src, expect",
    [
        ("import os\n" + ENTRY.format("pass"), "`import os` is not allowed"),
        ("import subprocess as s\n" + ENTRY.format("pass"), "`import subprocess`"),
        ("from ctypes import CDLL\n" + ENTRY.format("pass"), "`from ctypes import ...`"),
        ("from torch import *\n" + ENTRY.format("pass"), "import *"),
        ("from torch import load\n" + ENTRY.format("pass"), "`torch.load`"),
        ("from . import x\n" + ENTRY.format("pass"), "Relative imports"),
        ("import torch.utils.data\n" + ENTRY.format("pass"), "`import torch.utils.data`"),
        ("from torch import os\n" + ENTRY.format("pass"), "`torch.os` is the module `os`"),
        ("from reward_designer.state import np\n" + ENTRY.format("pass"), "Only `State`"),
        ("from numpy import random as r\n" + ENTRY.format("r.seed(0)"), "`numpy.random.seed`"),
        ("import torch\nT = torch\n" + ENTRY.format("pass"), "Use the module `torch` only"),
        ("import torch\ndef f(m=torch):\n    return m\n" + ENTRY.format("pass"), "Use the module `torch` only"),
        ("from torch import nn\n" + ENTRY.format("m = nn"), "Use the module `nn` only"),
        ("def reward(state, action):\n    return 0\n", "Define a top-level function"),
        ("def compute_reward(state):\n    return 0\n", "exactly two parameters"),
        ("def compute_reward(s, a):\n    return 0\n", "exactly two parameters"),
        ("def compute_reward(state, action, *rest):\n    return 0\n", "exactly two parameters"),
        ("async def compute_reward(state, action):\n    return 0\n", "not `async def`"),
        ("def compute_reward(state, action):\n    yield 0\n", "not `yield`"),
        ("class A:\n    pass\n" + ENTRY.format("pass"), "Classes"),
        ("while True:\n    pass\n" + ENTRY.format("pass"), "Top-level `while`"),
        ("print(1)\n" + ENTRY.format("pass"), "Top-level expressions"),
        ("def compute_reward(state, action:\n", "yntax error"),
        ("x = 1\0\n", "yntax error"),
        ("x = " + "-" * 5000 + "1\n" + ENTRY.format("pass"), "cannot be parsed"),
        ("x = " + "[" * 99 + "]" * 99 + "\n" + ENTRY.format("pass"), "nests expressions"),
        ("x = 1\n" * 5000, "characters long"),
    ],
)
def test_module_level_rules(src, expect):
    assert expect in _one(src)


def test_findings_are_sentences_with_lines_and_capped():
    src = "import torch\n" + ENTRY.format("; ".join(["eval('1')", "open('x')"] * 30))
    findings = lint(src)
    # Same finding on the same line is reported once.
    assert findings == [
        "Line 3: `eval` runs code and is not allowed in a reward program (if it is a variable of yours, rename it).",
        "Line 3: `open` reads or writes files and is not allowed in a reward program (if it is a variable of yours, "
        "rename it)."]
    many = "import torch\n" + "\n".join(f"x{i} = state._p{i}" for i in range(40)) + "\n" + ENTRY.format("pass")
    findings = lint(many)
    assert len(findings) == 21 and findings[-1].startswith("... and")


def test_obfuscation_is_the_runtime_layers_job():
    # The lint is a filter: built strings reach no forbidden *syntax*. These
    # programs are exercised against the sandbox in tests/adversarial/.
    src = ENTRY.format('x = [c for c in (1).__class__.__mro__]')  # caught: dunder syntax
    assert lint(src)
    sneaky = ENTRY.format('name = "gl" + "obals"; x = state.obs.sum(dim=0)')
    assert lint(sneaky) == []
