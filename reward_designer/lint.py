"""Static checks of untrusted reward code, before anything runs it.

A filter, not the boundary: it turns away programs that reach for things a
reward never needs (files, processes, introspection, patching libraries) and
tells the designer LLM, in one sentence each, what to change. Anything that
slips past it (obfuscated names, built strings) still meets the sandbox's
run-time layers. Each finding goes back to the LLM verbatim, so it says what
is wrong and what to do instead.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import types

# The modules a reward program may import or reach through attributes: what the contract names
# (torch tensors in and out, the State type for annotations), math, numpy, and their math
# namespaces. Any other is refused however it is reached: attributes hand out modules
# (``torch.os``, ``typing.sys``, ``reward_designer.state`` binding ``reward_designer.program``).
ALLOWED_MODULES = {
    "math", "typing", "reward_designer.state",
    "numpy", "numpy.linalg", "numpy.random", "numpy.fft",
    "torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.special", "torch.fft", "torch.distributions",
}
# reward_designer.state is importable for the State annotation, nothing else of it.
STATE_NAMES = {"State"}

# Builtins that load or run code, reach files or the terminal, or look objects
# up by a name computed at run time (the usual way around the dunder rule).
FORBIDDEN_NAMES = {
    "exec": "runs code",
    "eval": "runs code",
    "compile": "builds code",
    "open": "reads or writes files",
    "globals": "exposes the module's namespace",
    "locals": "exposes a frame's namespace",
    "vars": "exposes an object's namespace",
    "dir": "is introspection",
    "getattr": "looks up attributes by computed names",
    "setattr": "modifies objects",
    "delattr": "modifies objects",
    "breakpoint": "starts a debugger",
    "input": "reads the terminal",
    "help": "starts an interactive helper",
    "exit": "ends the process",
    "quit": "ends the process",
    "memoryview": "exposes raw memory",
    "type": "builds classes at run time",
}

# Library functions and submodules under an allowed module that touch files,
# processes, native code, compilers or process-wide settings. Matched as a
# prefix of the dotted path an attribute chain resolves to.
FORBIDDEN_PATHS = {
    "torch.load", "torch.save", "torch.from_file", "torch.hub", "torch.utils",
    "torch.ops", "torch.library", "torch.classes", "torch.multiprocessing",
    "torch.distributed", "torch.jit", "torch.compile", "torch.package",
    "torch.fx", "torch.export", "torch.onnx", "torch.profiler", "torch.backends",
    "torch.serialization", "torch.storage", "torch.overrides", "torch.manual_seed",
    "torch.seed", "torch.random", "torch.use_deterministic_algorithms",
    "numpy.load", "numpy.save", "numpy.savez", "numpy.savez_compressed",
    "numpy.savetxt", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile",
    "numpy.fromregex", "numpy.memmap", "numpy.ctypeslib", "numpy.lib",
    "numpy.f2py", "numpy.distutils", "numpy.testing", "numpy.DataSource",
    "numpy.random.seed", "numpy.random.set_state", "numpy.show_config", "torch.default_generator",
    "typing.get_type_hints", "typing.ForwardRef",  # evaluate strings as code
    "torch.distributions.Distribution.set_default_validate_args", "torch.distributions.register_kl",
}
# Process-wide setters (torch.set_default_dtype, numpy.seterr, ...) change
# how the trainer's own code behaves.
_SETTER = re.compile(r"^(torch|numpy)\.(set_|seterr|setbufsize)")  # not np.setdiff1d

# Attributes that lead out of the program whatever object they are read from:
# raw pointers, frames and code objects (frames reach the worker's globals).
FORBIDDEN_ATTRS = {
    "ctypes", "tofile", "fromfile", "from_file", "dump", "dumps", "mro",
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "ag_frame", "ag_code",
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace",
    "tb_frame", "tb_next", "co_code", "co_consts",
    # The standard library's process, file and interpreter modules, by the name any object may
    # hand them out under (``m = [torch][0]; m.os``); and ``sys.modules`` reaches every module.
    "os", "sys", "builtins", "ctypes", "subprocess", "importlib", "shutil", "socket", "pickle", "marshal",
    "io", "pathlib", "posix", "gc", "inspect", "threading", "multiprocessing", "runpy", "pty", "fcntl",
    "resource", "mmap", "tempfile", "glob", "linecache", "modules",
}

_DUNDER = re.compile(r"__\w+__")
_MAX_DEPTH = 100  # far deeper than any reward needs; absurd depths stall or crash the compiler
_MAX_FINDINGS = 20  # enough to act on; a hostile program could produce thousands


def lint(source: str, entry: str = "compute_reward", max_chars: int = 20_000) -> list[str]:
    """Findings about ``source``, one short sentence each; an empty list passes."""
    if len(source) > max_chars:
        return [f"The program is {len(source)} characters long; keep it under {max_chars}."]
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        where = f"Line {e.lineno}: s" if e.lineno else "S"
        return [f"{where}yntax error: {e.msg}."]
    except (ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting
        return ["The program cannot be parsed (null bytes or absurdly deep nesting); write plain Python source."]
    if _depth(tree) > _MAX_DEPTH:
        return [f"The program nests expressions more than {_MAX_DEPTH} levels deep; flatten it."]

    checker = _Checker()
    checker.check_module(tree, entry)
    findings = list(dict.fromkeys(checker.findings))  # ordered, without repeats
    if len(findings) > _MAX_FINDINGS:
        findings = findings[:_MAX_FINDINGS] + [f"... and {len(findings) - _MAX_FINDINGS} more findings."]
    return findings


# The attributes that read contact forces (state.Body's): the simulator computes them, at a cost per
# step, only for a program that names one. Attribute names are literal in a program that passes the
# lint (no getattr); one that reaches them otherwise gets the State's error saying so.
CONTACT_ATTRS = {"contact_force", "in_contact"}


def reads_contacts(*sources: str | None) -> bool:
    """Whether any of the programs (None: no program) reads contact forces."""
    for source in sources:
        try:
            tree = ast.parse(source or "")
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # lint() says why
            continue
        if any(isinstance(node, ast.Attribute) and node.attr in CONTACT_ATTRS for node in ast.walk(tree)):
            return True
    return False


def _depth(tree: ast.AST) -> int:
    # Iterative: a recursive walk would itself hit the recursion limit.
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"], or None when the chain's root is not a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _root_name(node: ast.AST) -> str | None:
    """The variable an expression like ``state.obs[:, 0].x`` starts from; None past a ``.clone()``,
    which makes a fresh copy."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "clone":
            return None
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


class _Checker(ast.NodeVisitor):
    def __init__(self):
        self.findings: list[str] = []
        self.modules: dict[str, str] = {}  # local name -> dotted path it stands for
        self.module_names: set[str] = set()  # the local names bound to modules
        self._attribute_bases: set[int] = set()  # ids of the nodes read as `base` in `base.attr`
        self.params: set[str] = set()  # the entry function's parameter names

    def add(self, node: ast.AST, text: str) -> None:
        line = getattr(node, "lineno", None)
        self.findings.append(f"Line {line}: {text}" if line else text)

    # ---------------------------------------------------------------- module
    def check_module(self, tree: ast.Module, entry: str) -> None:
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry]
        if not defs:
            self.add(tree, f"Define a top-level function `def {entry}(state, action):`.")
        for fn in defs:
            self._check_entry(fn, entry)
        for node in tree.body:
            # Top-level code runs when the program is loaded; a reward only
            # needs imports, constants and functions there.
            if not isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Assign, ast.AnnAssign, ast.Expr)):
                self.add(node, f"Top-level `{type(node).__name__.lower()}` statements are not allowed; "
                               "keep only imports, constants and functions at the top level.")
            elif isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant):
                self.add(node, "Top-level expressions run at load time; move this call into a function.")
        self.visit(tree)

    def _check_entry(self, fn: ast.AST, entry: str) -> None:
        if isinstance(fn, ast.AsyncFunctionDef):
            self.add(fn, f"`{entry}` must be a plain `def`, not `async def`.")
            return
        a = fn.args
        names = [p.arg for p in a.posonlyargs + a.args]
        required = names[: len(names) - len(a.defaults)]
        if names[:2] != ["state", "action"] or len(required) > 2 or a.vararg or a.kwarg or a.kwonlyargs:
            self.add(fn, f"`{entry}` must take exactly two parameters: `def {entry}(state, action):`.")
        self.params = {"state", "action"}
        if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in ast.walk(fn)):
            self.add(fn, f"`{entry}` must `return reward, components`, not `yield`.")

    # ---------------------------------------------------------------- imports
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                self.add(node, f"`import {alias.name}` is not allowed; only {_allowed()} may be imported.")
                continue
            if alias.asname:
                self.modules[alias.asname] = alias.name
                self.module_names.add(alias.asname)
            else:  # `import torch.nn` binds `torch`
                top = alias.name.split(".")[0]
                self.modules[top] = top
                self.module_names.add(top)
            self._check_name(node, alias.asname)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level:
            self.add(node, "Relative imports are not allowed.")
            return
        if mod == "__future__":
            return  # compiler directives (`annotations`), nothing is loaded
        if mod not in ALLOWED_MODULES:
            self.add(node, f"`from {mod} import ...` is not allowed; only {_allowed()} may be imported.")
            return
        for alias in node.names:
            if alias.name == "*":
                self.add(node, f"`from {mod} import *` is not allowed; import the names you use.")
                continue
            if mod == "reward_designer.state" and alias.name not in STATE_NAMES:
                self.add(node, f"Only `State` may be imported from reward_designer.state, not `{alias.name}`.")
                continue
            path = f"{mod}.{alias.name}"
            self.modules[alias.asname or alias.name] = path
            if _is_module(path):
                self.module_names.add(alias.asname or alias.name)
            self._check_path(node, path)
            self._check_name(node, alias.name)
            self._check_name(node, alias.asname)

    # ---------------------------------------------------------------- names
    def _check_name(self, node: ast.AST, name: str | None) -> None:
        if name and _DUNDER.fullmatch(name):
            self.add(node, f"Dunder names like `{name}` are not allowed.")

    def visit_Name(self, node: ast.Name) -> None:
        self._check_name(node, node.id)
        if node.id in self.module_names and id(node) not in self._attribute_bases:
            # Bound to another name, passed or returned, a module escapes the checks on its attributes.
            self.add(node, f"Use the module `{node.id}` only as `{node.id}.name`; do not pass it around "
                           "or bind it to another name.")
        if node.id in FORBIDDEN_NAMES:
            self.add(node, f"`{node.id}` {FORBIDDEN_NAMES[node.id]} and is not allowed in a reward program "
                           "(if it is a variable of yours, rename it).")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._check_name(node, node.name)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.add(node, "Classes are not allowed; write plain functions.")
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self._check_name(node, node.arg)

    def visit_keyword(self, node: ast.keyword) -> None:
        self._check_name(node, node.arg)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            self._check_name(node, name)

    def visit_Expr(self, node: ast.Expr) -> None:
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            self.generic_visit(node)  # a string on its own (a docstring) is read only through __doc__

    def visit_Constant(self, node: ast.Constant) -> None:
        # "{0.__class__}".format(x) walks attributes from inside a string.
        if isinstance(node.value, str) and _DUNDER.search(node.value):
            self.add(node, "Strings containing dunder names (`__...__`) are not allowed.")

    # ---------------------------------------------------------------- attributes
    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if _DUNDER.fullmatch(attr):
            self.add(node, f"Dunder attribute `.{attr}` is not allowed.")
        elif attr.startswith("_"):
            self.add(node, f"Private attribute `.{attr}` is not allowed; use the public State API "
                           "(state.obs, state.body(name).pos, ...).")
        elif attr in FORBIDDEN_ATTRS:
            self.add(node, f"Attribute `.{attr}` is not allowed in a reward program.")
        self._attribute_bases.add(id(node.value))
        parts = _dotted(node)
        if parts and parts[0] in self.modules:
            self._check_path(node, ".".join([self.modules[parts[0]]] + parts[1:]))
        self.generic_visit(node)

    def _check_path(self, node: ast.AST, path: str) -> None:
        canonical, module = _resolve(path)
        if module is not None:
            self.add(node, f"`{path}` is the module `{module}`, which a reward program may not use; "
                           f"only {_allowed()} and their math namespaces.")
        for p in {path, canonical}:
            if any(p == f or p.startswith(f + ".") for f in FORBIDDEN_PATHS) or _SETTER.match(p):
                self.add(node, f"`{path}` is not allowed: a reward program computes tensors and touches "
                               "no files, processes or global settings.")

    # ---------------------------------------------------------------- mutation
    def _check_target(self, target: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._check_target(t)
        elif isinstance(target, ast.Starred):
            self._check_target(target.value)
        elif isinstance(target, ast.Attribute):
            self.add(target, "Assigning to attributes (`x.y = ...`) is not allowed; "
                             "compute new values instead of modifying objects or libraries.")
        elif isinstance(target, ast.Subscript) and _root_name(target) in self.params:
            self.add(target, f"Do not write into `{_root_name(target)}`; copy it under a new name first "
                             "(`x = state.qpos.clone()`) and modify the copy.")

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_target(t)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_target(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._check_target(t)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        # In-place tensor methods (add_, copy_, zero_, ...) on the inputs.
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr.endswith("_") and not f.attr.startswith("_")
                and _root_name(f.value) in self.params):
            self.add(node, f"`.{f.attr}()` modifies `{_root_name(f.value)}` in place; "
                           f"use the out-of-place `.{f.attr[:-1]}()` instead.")
        self.generic_visit(node)


def _resolve(path: str) -> tuple[str, str | None]:
    """``path`` named from the last module along it (``reward_designer.state.np.load`` is
    ``numpy.load``), and the first module along it that a program may not reach, if any.

    Follows module attributes only, in the lint's own process: the modules are the allowed
    ones and their submodules, imported for real; the untrusted program is not run.
    """
    parts = path.split(".")
    obj, canonical = importlib.import_module(parts[0]), parts[:1]
    for name in parts[1:]:
        if not isinstance(obj, types.ModuleType):
            canonical.append(name)
            continue
        try:
            obj = getattr(obj, name)
        except Exception:  # noqa: BLE001 - not an attribute here, but perhaps a submodule imported where it runs
            sub = f"{obj.__name__}.{name}"
            if not (hasattr(obj, "__path__") and importlib.util.find_spec(sub)):
                obj = None
            elif sub not in ALLOWED_MODULES:
                return path, sub
            else:
                obj = importlib.import_module(sub)
        if isinstance(obj, types.ModuleType):
            if obj.__name__ not in ALLOWED_MODULES:
                return path, obj.__name__
            canonical = obj.__name__.split(".")
        else:
            canonical.append(name)
    return ".".join(canonical), None


def _is_module(path: str) -> bool:
    """Whether ``from a.b import c`` binds a module (``from torch import nn``), not a function or value."""
    try:
        return importlib.util.find_spec(path) is not None
    except (ImportError, ValueError):  # the parent is not a package (``math.pi``)
        return False


def _allowed() -> str:
    return ", ".join(sorted(ALLOWED_MODULES))
