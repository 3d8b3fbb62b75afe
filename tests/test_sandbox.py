"""The sandbox's layers, each on its own, with a minimal worker (tests/adversarial/snippet_worker.py).

The hostile programs through the real worker are in tests/adversarial/.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from processes import processes_naming
from reward_designer import sandbox
from reward_designer.sandbox import (
    LAYERS,
    Limits,
    SandboxUnavailable,
    copy_output,
    doctor,
    read_output,
    run_worker,
    sanitize_workdir,
)
from reward_designer.sandbox import environment, layers, namespaces
from reward_designer.sandbox.runner import _remove_tree, _Tail
from reward_designer.state import state_pair

SNIPPETS = Path(__file__).parent / "adversarial"
ACTIVE = {s.name for s in doctor() if s.active}
needs_bwrap = pytest.mark.skipif("namespaces" not in ACTIVE, reason="bubblewrap is not usable here")
needs_seccomp = pytest.mark.skipif("seccomp" not in ACTIVE, reason="pyseccomp/libseccomp not usable here")
SMALL = Limits(wall_s=20, cpu_s=10, memory_mb=2048, file_mb=16, disk_mb=64, output_kb=8)


def snippet(tmp_path: Path, code: str, limits: Limits = SMALL, *, confine: bool = True, with_torch: bool = False,
            **kw) -> sandbox.Outcome:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    job = workdir / "job.json"
    job.write_text(json.dumps({"code": textwrap.dedent(code), "confine": confine, "torch": with_torch}))
    return run_worker(job, workdir, limits, module="snippet_worker", read_only=[SNIPPETS],
                      extra_env={"PYTHONPATH": str(SNIPPETS)}, **kw)


# ------------------------------------------------------------------ doctor
def test_doctor_names_every_layer_and_why():
    statuses = doctor()
    assert [s.name for s in statuses] == list(LAYERS)
    assert all(s.detail for s in statuses)
    assert statuses[0].active  # the process layer needs nothing


# ------------------------------------------------------------------ process layer
def test_environment_is_an_allow_list(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = environment.worker_env("/tmp")
    assert "OPENAI_API_KEY" not in env and "GITHUB_TOKEN" not in env
    assert env["OMP_NUM_THREADS"] == "1" and env["HOME"] == "/tmp" and env["PYTHONNOUSERSITE"] == "1"
    assert not any("secret" in v for v in env.values())


def test_output_tail_is_bounded():
    r, w = os.pipe()
    tail = _Tail(os.fdopen(r, "rb"), keep=1000)
    tail.start()
    with os.fdopen(w, "wb") as f:
        for i in range(2000):
            f.write(f"{i:08d}\n".encode() * 100)
    tail.join(5)
    assert tail.total == 2000 * 900
    text = tail.text()
    assert len(text) == 1000 and text.endswith("00001999\n")


def test_sanitize_removes_links_fifos_and_hard_links(tmp_path):
    (tmp_path / "keep.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "keep.txt").write_text("x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_text("secret")
    (tmp_path / "result.json").symlink_to(outside)
    (tmp_path / "dirlink").symlink_to(tmp_path.parent)
    os.mkfifo(tmp_path / "progress.jsonl")
    os.link(outside, tmp_path / "job.json")
    removed = sanitize_workdir(tmp_path)
    assert sorted(removed) == ["dirlink", "job.json", "progress.jsonl", "result.json"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.json", "keep.txt", "sub"]
    assert outside.read_text() == "secret"


def test_a_folder_tree_deeper_than_the_recursion_limit_is_sanitized_not_a_crash(tmp_path):
    """os.walk and shutil.rmtree recurse in Python 3.11: such a tree raised RecursionError out of
    run_worker, and again on every resume (sanitizing, and handing the folder over, before the run)."""
    code = """
        import os, tempfile
        for top in (os.getcwd(), tempfile.gettempdir()):
            os.chdir(top)
            for _ in range(1500):
                if not os.path.isdir("a"):
                    os.mkdir("a")
                os.chdir("a")
            os.symlink("/etc/passwd", "result.json")
    """
    try:
        for _ in range(2):
            out = snippet(tmp_path, code)
            assert out.returncode == 0, out.stderr_tail
        deep = tmp_path / "work" / Path(*["a"] * 1500)
        assert deep.is_dir() and not os.path.lexists(deep / "result.json")
        assert not (tmp_path / "work" / ".tmp").exists()  # the TMPDIR used without bubblewrap is gone
    finally:
        _remove_tree(tmp_path / "work")  # pytest's clean-up of old temporary folders recurses too


def test_read_output_refuses_links_and_fifos(tmp_path):
    (tmp_path / "progress.jsonl").write_text("x" * 100)
    assert read_output(tmp_path / "progress.jsonl", max_bytes=10) == b"x" * 10
    (tmp_path / "link").symlink_to(tmp_path / "progress.jsonl")
    os.mkfifo(tmp_path / "fifo")
    for name in ("link", "fifo"):
        with pytest.raises(OSError):
            read_output(tmp_path / name)


def test_read_output_tail_gives_the_last_bytes(tmp_path):
    (tmp_path / "progress.jsonl").write_text("abcdefghij")
    assert read_output(tmp_path / "progress.jsonl", max_bytes=3, tail=True) == b"hij"
    assert read_output(tmp_path / "progress.jsonl", max_bytes=30, tail=True) == b"abcdefghij"


def test_copy_output_goes_through_no_link_at_either_end(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("secret")
    worker = tmp_path / "worker"
    worker.mkdir()
    (worker / "policy.npz").symlink_to(secret)
    with pytest.raises(OSError):
        copy_output(worker / "policy.npz", tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    # A link planted where the copy goes is replaced, not written through.
    (worker / "policy.npz").unlink()
    (worker / "policy.npz").write_text("weights")
    (worker / "dst").symlink_to(secret)
    copy_output(worker / "policy.npz", worker / "dst")
    assert (worker / "dst").read_text() == "weights" and not (worker / "dst").is_symlink()
    assert secret.read_text() == "secret"


def test_exit_code_output_and_layers(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-in-parent")
    out = snippet(tmp_path, """
        import os, sys
        print("hello", os.environ.get("OPENAI_API_KEY"), os.environ["HOME"])
        sys.exit(3)
    """)
    assert out.returncode == 3 and out.limit is None and out.detail == "exited with code 3"
    assert out.stdout_tail.startswith("hello None ") and "sk-secret" not in out.stdout_tail
    assert set(out.layers) == ACTIVE and out.missing == [x for x in LAYERS if x not in ACTIVE]


def test_a_private_workdir_is_usable(tmp_path):
    """A folder made 0700 (tempfile.mkdtemp's): bubblewrap enters it before the worker drops to its uid."""
    (tmp_path / "work").mkdir(mode=0o700)
    out = snippet(tmp_path, "print('ran')")
    assert out.returncode == 0 and out.stdout_tail.strip() == "ran", out.stderr_tail


def test_wall_clock_deadline_kills_the_whole_sandbox(tmp_path):
    t0 = time.monotonic()
    out = snippet(tmp_path, """
        import threading, time
        threading.Thread(target=time.sleep, args=(1000,)).start()
        time.sleep(1000)
    """, SMALL.model_copy(update={"wall_s": 1.5}))
    assert out.timed_out and out.limit == "wall" and out.signal == signal.SIGKILL
    assert time.monotonic() - t0 < 8


def test_a_failing_poll_kills_the_worker_and_propagates(tmp_path):
    marker = tmp_path / "work" / "alive"

    def poll():
        if marker.exists():
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        snippet(tmp_path, f"""
            import time
            open({str(marker)!r}, "w").close()
            time.sleep(1000)
        """, poll=poll)
    assert processes_naming(str(tmp_path)) == []  # its own: other tests may run snippet workers meanwhile


def test_cpu_limit(tmp_path):
    out = snippet(tmp_path, "while True: pass", SMALL.model_copy(update={"cpu_s": 1}))
    assert out.limit == "cpu" and out.signal_name in ("SIGXCPU", "SIGKILL")


def test_cpu_limit_is_named_when_the_worker_ignores_sigxcpu_and_no_sample_saw_it_near(tmp_path, monkeypatch):
    # The hard limit's SIGKILL says nothing by itself, and under bubblewrap no rusage reaches the
    # parent: the CPU samples tell. A loaded machine can delay them; here no sample follows the first.
    from reward_designer.sandbox import runner

    monkeypatch.setattr(runner, "_CHECK_S", 1000.0)
    out = snippet(tmp_path, """
        import signal
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        while True: pass
    """, SMALL.model_copy(update={"cpu_s": 1}))
    assert out.signal_name == "SIGKILL" and out.limit == "cpu", out.detail
    quick = snippet(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert quick.signal_name == "SIGKILL" and quick.limit is None, quick.detail


def test_memory_limit(tmp_path):
    out = snippet(tmp_path, "x = bytearray(4 * 2**30)", SMALL.model_copy(update={"memory_mb": 512}))
    assert out.limit == "memory" and "MemoryError" in out.stderr_tail


def test_resident_memory_limit_where_address_space_is_left_free(tmp_path):
    # CUDA reserves far more address space than it uses: a worker on a GPU is limited by resident memory.
    free = SMALL.model_copy(update={"memory_mb": 512, "address_space": False})
    reserve = "import mmap; m = mmap.mmap(-1, 8 * 2**30); print('reserved')"
    out = snippet(tmp_path, reserve, free)
    assert out.ok and "reserved" in out.stdout_tail
    assert snippet(tmp_path, reserve, SMALL.model_copy(update={"memory_mb": 512})).limit == "memory"
    out = snippet(tmp_path, """
        import time
        held = []
        while True:
            held.append(b"x" * 2**25)  # touched, so resident
            time.sleep(0.01)
    """, free)
    assert out.limit == "memory" and "resident memory" in out.detail
    assert out.wall_s < 10


def test_disk_quota(tmp_path):
    out = snippet(tmp_path, """
        for i in range(100_000):
            with open(f"f{i}", "wb") as f:
                f.write(b"0" * 2**20)
    """, SMALL.model_copy(update={"disk_mb": 20, "file_mb": 2}))
    assert out.limit == "disk"


def test_require_refuses_when_a_layer_is_missing(tmp_path, monkeypatch):
    plan = layers.plan_layers()
    broken = [s.model_copy(update={"active": False, "detail": "pretend"}) if s.name == "seccomp" else s
              for s in plan.statuses]
    monkeypatch.setattr(layers, "plan_layers", lambda: layers.Plan(statuses=broken, bwrap=plan.bwrap))
    monkeypatch.setattr(sandbox.runner, "plan_layers", lambda: layers.Plan(statuses=broken, bwrap=plan.bwrap))
    with pytest.raises(SandboxUnavailable, match="seccomp: pretend"):
        snippet(tmp_path, "print('never runs')", require=True)


def test_without_bubblewrap_it_runs_with_a_warning(tmp_path, monkeypatch, caplog):
    plan = layers.plan_layers()
    statuses = [s.model_copy(update={"active": False, "detail": "pretend"})
                if s.name in ("namespaces", "unprivileged-uid") else s for s in plan.statuses]
    fake = layers.Plan(statuses=statuses, bwrap=False)
    monkeypatch.setattr(sandbox.runner, "plan_layers", lambda: fake)
    with caplog.at_level(logging.WARNING, logger="reward_designer.sandbox"):
        out = snippet(tmp_path, "print('ran')")
        snippet(tmp_path, "print('ran again')")
    assert out.returncode == 0 and out.stdout_tail == "ran\n"
    assert "namespaces" in out.missing and "unprivileged-uid" in out.missing
    assert sum("sandbox layers missing" in r.message for r in caplog.records) == 1


@pytest.mark.skipif("landlock" not in ACTIVE, reason="this kernel has no Landlock")
def test_without_bubblewrap_landlock_keeps_a_program_to_its_folder(tmp_path, monkeypatch):
    """Without the mounts, the files a worker may touch are Landlock's rules: the security reviews'
    programs read the parent's API keys from /proc/PPID/environ, removed or chmod-ed files outside the
    run folder, read the task cards and read /dev/kmsg through a device node made in their folder."""
    import reward_designer.envs

    fake = layers.Plan(statuses=[s.model_copy(update={"active": False}) if s.name == "namespaces" else s
                                 for s in layers.plan_layers().statuses], bwrap=False)
    monkeypatch.setattr(sandbox.runner, "plan_layers", lambda: fake)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary")
    (tmp_path / "victim.txt").write_text("precious")
    card = Path(reward_designer.envs.__path__[0]) / "halfcheetah-run.yaml"
    out = snippet(tmp_path, f"""
        import os, json
        for what, path in [("environ", f"/proc/{{os.getppid()}}/environ"), ("mem", f"/proc/{{os.getppid()}}/mem"),
                           ("victim", {str(tmp_path / "victim.txt")!r}), ("card", {str(card)!r})]:
            try:
                print(what, open(path, "rb").read(100))
            except OSError as e:
                print(what, "refused", e.errno)
        for what, act in [("remove", lambda: os.remove({str(tmp_path / "victim.txt")!r})),
                          ("write", lambda: open({str(tmp_path / "escaped.txt")!r}, "w")),
                          ("chmod", lambda: os.chmod({str(tmp_path / "victim.txt")!r}, 0o777)),
                          ("mknod", lambda: os.mknod("kmsg", 0o20600, os.makedev(1, 11)))]:
            try:
                act()
                print(what, "DONE")
            except OSError as e:
                print(what, "refused", e.errno)
        open("mine.txt", "w").write("ok")
        print("stdlib", len(open(json.__file__).read()) > 0)
    """)
    assert out.returncode == 0, out.stderr_tail
    assert "landlock" in out.layers and "namespaces" in out.missing
    lines = dict(line.split(" ", 1) for line in out.stdout_tail.splitlines())
    for what in ("environ", "mem", "victim", "card", "remove", "write", "mknod"):
        assert lines[what] == "refused 13", (what, lines[what])  # EACCES: Landlock
    if "seccomp" in ACTIVE:
        assert lines["chmod"] == "refused 1"  # EPERM: seccomp (Landlock does not cover metadata)
    assert lines["stdlib"] == "True" and (tmp_path / "work" / "mine.txt").read_text() == "ok"
    assert (tmp_path / "victim.txt").read_text() == "precious" and not (tmp_path / "escaped.txt").exists()


@pytest.mark.skipif("landlock" not in ACTIVE, reason="this kernel has no Landlock")
def test_a_writable_root_that_holds_a_hidden_path_stays_writable(tmp_path):
    """Under bubblewrap TMPDIR is /tmp, and a checkout under /tmp puts its task cards there (masked by
    the mounts): granted entry by entry, /tmp could not be written and TMPDIR fell back to the cwd."""
    import subprocess
    import sys

    from reward_designer.sandbox import landlock

    root = tmp_path / "rw"
    (root / "envs").mkdir(parents=True)
    (root / "envs" / "card.yaml").write_text("fitness: secret")
    rules = landlock.rules(read_write=[str(root)], read=namespaces.readable(), devices=[],
                           hidden=[str(root / "envs" / "card.yaml")])
    code = ("import os, sys\nfrom reward_designer.sandbox import landlock\nlandlock.restrict(os.environ['RULES'])\n"
            "open(sys.argv[1], 'w').write('ok')\n")
    subprocess.run([sys.executable, "-c", code, str(root / "new.txt")], env={**os.environ, "RULES": rules},
                   check=True, capture_output=True)
    assert (root / "new.txt").read_text() == "ok"


def test_a_worker_that_never_confines_itself_reports_seccomp_missing(tmp_path):
    out = snippet(tmp_path, "print('unconfined')", confine=False)
    assert out.returncode == 0 and "seccomp" in out.missing


# ------------------------------------------------------------------ namespaces and uid
@needs_bwrap
def test_only_the_python_installation_and_own_folder_are_visible(tmp_path):
    checkout = Path(__file__).resolve().parents[1]
    out = snippet(tmp_path, f"""
        import os
        print(sorted(os.listdir("/")))
        print(os.path.exists({str(checkout / "pyproject.toml")!r}), os.path.exists({str(Path.home())!r} + "/.bashrc"))
        print(os.getuid(), os.getgid())
        open("mine.txt", "w").write("ok")
        for p in ["/usr/x", "/etc/x", {str(checkout / "x")!r}]:
            try:
                open(p, "w")
                print("WROTE", p)
            except OSError as e:
                print("refused", e.errno)
    """, confine=False)  # the mounts alone, without Landlock (which would refuse listing /)
    lines = out.stdout_tail.splitlines()
    assert out.returncode == 0, out.stderr_tail
    assert "home" not in lines[0] and "farm" not in lines[0]
    assert lines[1] == "False False"
    assert lines[2] == "65534 65534"
    assert "WROTE" not in out.stdout_tail
    assert (tmp_path / "work" / "mine.txt").read_text() == "ok"


@needs_bwrap
def test_no_network_and_own_pid_namespace(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    out = snippet(tmp_path, f"""
        import os, socket
        print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("CONNECTED")
        except OSError as e:
            print("refused", type(e).__name__)
    """, confine=False)  # namespaces alone, without seccomp
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.accept()
    pids, net = out.stdout_tail.splitlines()
    assert len(json.loads(pids)) <= 3  # bubblewrap's init, the worker (and its own threads' view)
    assert net.startswith("refused")


@needs_bwrap
def test_nproc_limits_the_unprivileged_uid(tmp_path):
    if "unprivileged-uid" not in ACTIVE:
        pytest.skip("NPROC only applies under an unprivileged uid")
    out = snippet(tmp_path, """
        import threading, time
        n = 0
        try:
            for _ in range(200):
                threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
                n += 1
        except RuntimeError:
            pass
        print(n)
    """, SMALL.model_copy(update={"nproc": 40}), confine=False)
    assert int(out.stdout_tail) < 40


# ------------------------------------------------------------------ seccomp
@needs_seccomp
def test_seccomp_keeps_threads_and_self_signals_and_denies_the_rest(tmp_path):
    out = snippet(tmp_path, """
        import os, signal, socket, threading
        import torch
        torch.set_num_threads(2)
        a = torch.rand(300, 300)
        print("matmul", float((a @ a).sum()) > 0)
        t = threading.Thread(target=print, args=("thread ok",))
        t.start(); t.join()
        signal.signal(signal.SIGUSR1, lambda *a: print("self signal ok"))
        os.kill(os.getpid(), signal.SIGUSR1)
        try:
            socket.socket()
        except PermissionError:
            print("socket denied")
        os.fork()
        print("FORKED")
    """, with_torch=True)
    assert out.stdout_tail.splitlines() == ["matmul True", "thread ok", "self signal ok", "socket denied"]
    assert out.limit == "seccomp" and out.signal == signal.SIGSYS
    assert "seccomp" in out.layers


@needs_seccomp
def test_confine_self_requires_when_asked(monkeypatch):
    # In this (test) process, only the failure path: the filter itself would confine pytest.
    def broken():
        raise OSError("libseccomp refused")

    monkeypatch.setattr(layers.seccomp, "apply_filter", broken)
    with pytest.raises(SandboxUnavailable, match="Landlock could not be applied: the parent passed no rules"):
        sandbox.confine_self(require=True)
    monkeypatch.setattr(layers.landlock, "restrict", lambda spec: None)
    monkeypatch.setenv(layers.landlock.FS_RULES, "{}")
    with pytest.raises(SandboxUnavailable, match="libseccomp refused"):
        sandbox.confine_self(require=True)
    assert sandbox.confine_self(require=False) == []  # the rules were taken by the call before


# ------------------------------------------------------------------ integrity
def test_state_hands_out_copies():
    physics = {"obs": np.ones((2, 3)), "qpos": np.ones((2, 4)), "qvel": np.zeros((2, 4))}
    state = state_pair({k: v.copy() for k, v in physics.items()}, physics, None, 0.05)
    state.obs.mul_(0)
    state.qpos[:] = 7
    state.prev.qvel.add_(1)
    assert (physics["obs"] == 1).all() and (physics["qpos"] == 1).all() and (physics["qvel"] == 0).all()


def test_task_cards_in_subfolders_and_dot_files_are_hidden_too(tmp_path, monkeypatch):
    pkg = tmp_path / "cardpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in ("top.yaml", "sub/deep.yaml", ".dot.yaml"):
        (pkg / name).write_text("fitness: secret")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(namespaces, "HIDDEN_IN_PACKAGES", {"cardpkg": ("*.yaml",)})
    namespaces.hidden_files.cache_clear()
    try:
        hidden = {os.path.relpath(f, pkg) for f in namespaces.hidden_files() if f.startswith(str(pkg))}
    finally:
        namespaces.hidden_files.cache_clear()
    assert hidden == {"top.yaml", "sub/deep.yaml", ".dot.yaml"}


def test_bwrap_argv_hides_task_cards_and_makes_parents_traversable(tmp_path):
    if namespaces.bwrap_path() is None:
        pytest.skip("bubblewrap is not installed")
    argv = namespaces.bwrap_argv(tmp_path, 16)
    pairs = list(zip(argv, argv[1:]))
    hidden = [b for a, b in zip(argv, argv[2:]) if a == "--ro-bind" and b.endswith(".yaml")]
    cards = list((Path(__file__).resolve().parents[1] / "envs").glob("*.yaml"))
    if cards and str(cards[0].parent) in argv:
        assert len(hidden) == len(cards)
    assert ("--bind", str(tmp_path.resolve())) in pairs
    # Every parent of the run folder that bubblewrap has to create is made 0755 first.
    dirs = [argv[i + 3] for i, a in enumerate(argv) if a == "--perms" and argv[i + 2] == "--dir"]
    for parent in tmp_path.resolve().parents[:-1]:
        if str(parent) != "/tmp":
            assert str(parent) in dirs
