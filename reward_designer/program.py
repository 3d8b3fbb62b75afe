"""Reward programs: pulling code out of an LLM reply, and loading it (in a worker only)."""

from __future__ import annotations

import ast
import hashlib
import linecache
import re
import types
from typing import Callable

from pydantic import BaseModel

from .schemas import FitnessSpec

ENTRY = "compute_reward"
FITNESS_ENTRY = "compute_fitness"
NO_CODE = "# (no code was found in the reply)"  # stands for a reply without a program

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_CODE_START = re.compile(r"^(import |from |def |@|[A-Za-z_][A-Za-z0-9_]* *=)")


class RewardProgram(BaseModel):
    """A candidate's program: its code and the candidate it refines."""

    code: str | None  # None: the reply held no program (the critic says so)
    parent: str | None = None  # the name of the candidate whose program it refines (``iter_01/cand_02``)

    @property
    def id(self) -> str:
        """A short hash of the code: the same program has the same id wherever it came from."""
        return hashlib.sha256((self.code or "").encode()).hexdigest()[:12]


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except SyntaxError:
        return False


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*def\s+{name}\s*\(", code, re.MULTILINE) is not None


def extract_code(reply: str, entry: str = ENTRY) -> str | None:
    """The program in an LLM reply: fenced blocks first, then bare code amid prose.

    With several fenced blocks, the one defining ``entry`` wins; other blocks
    that parse (helpers, imports) are kept in front of it when the entry block
    uses a name they define, directly or through another kept block. Returns
    None when no code defines ``entry``.
    A block that defines ``entry`` but does not parse is still returned, so the
    critic can tell the designer exactly what is wrong with it.
    """
    blocks = [b for lang, b in _FENCE.findall(reply) if lang.lower() in ("", "python", "py", "python3")]
    if blocks:
        main = [b for b in blocks if _defines(b, entry)]
        if not main:
            return None
        code = main[-1]
        # A block that calls the entry is a usage example, not a helper.
        helpers = [b for b in blocks if b is not code and not _defines(b, entry) and _parses(b)
                   and entry not in _names_used(b)]
        # Kept: the helpers the entry block uses, the ones those use, and so on.
        used, needed = _names_used(code), set()
        while grown := [i for i, h in enumerate(helpers) if i not in needed and _top_level_names(h) & used]:
            needed.update(grown)
            for i in grown:
                used |= _names_used(helpers[i])
        return ("\n\n".join([h for i, h in enumerate(helpers) if i in needed] + [code])).strip() + "\n"
    if not _defines(reply, entry):
        return None
    # Bare code: from the first line that looks like code to the last that does. Only cuts before
    # an unindented line, the last 200 of them: each try parses the whole prefix, and a reply that
    # ran to the token limit can be thousands of lines.
    lines = reply.splitlines()
    start = next((i for i, ln in enumerate(lines) if _CODE_START.match(ln)), 0)
    body = lines[start:]
    ends = [end for end in range(len(body), 0, -1) if end == len(body) or not body[end][:1].isspace()][:200]
    for end in ends:
        candidate = "\n".join(body[:end])
        if _parses(candidate) and _defines(candidate, entry):
            return candidate.strip() + "\n"
    return "\n".join(body).strip() + "\n"


def _top_level_names(code: str) -> set[str]:
    names = set()
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _names_used(code: str) -> set[str]:
    """The names ``code`` reads but does not bind itself (a function's locals and arguments are its own)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", code))
    read, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
    return read - bound


def fitness_aggregate(code: str, default: str = "sum") -> str:
    """The ``AGGREGATE = "..."`` literal a fitness file may declare (read statically)."""
    for node in ast.parse(code).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "AGGREGATE" for t in node.targets)
            and isinstance(node.value, ast.Constant)
        ):
            return str(node.value.value)
    return default


def fitness_from_code(code: str, source: str, description: str = "") -> FitnessSpec:
    return FitnessSpec(code=code, aggregate=fitness_aggregate(code), source=source, description=description)


def load_function(code: str, entry: str, module_name: str = "reward_program") -> Callable:
    """Execute ``code`` in a fresh module and return its ``entry`` function.

    Runs untrusted code: call it only inside a sandboxed worker.
    """
    module = types.ModuleType(module_name)
    filename = f"<{module_name}>"
    # So tracebacks show the failing line's code, which the designer is sent.
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    exec(compile(code, filename, "exec"), module.__dict__)  # noqa: S102 - sandboxed worker only
    fn = module.__dict__.get(entry)
    if not callable(fn):
        raise ValueError(f"the program defines no function {entry}()")
    return fn
