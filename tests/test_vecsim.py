"""The batched simulator against gymnasium, step for step, on the same actions."""

import gc
import inspect
import logging
import os
import select
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.registration import EnvSpec

from reward_designer import state as st
from reward_designer.twin import Twin, TwinDied
from reward_designer.sim import BACKENDS, HOST, VecSim, backend_class, make_vecsim
from reward_designer.sim.gym_vector import GymVecSim
from reward_designer.sim.slabs import BALANCE_EVERY, MujocoVecSim

pytestmark = pytest.mark.filterwarnings("ignore")


def lockstep(env_id, num_envs=3, steps=60, seed=7, action_scale=1.0, env_kwargs=None):
    """Step our sim and one gymnasium env per slot on the same actions; compare
    everything; return (terminations, truncations) seen, so a test can insist
    that the interesting cases happened."""
    sim = make_vecsim(env_id, num_envs, seed=seed, env_kwargs=env_kwargs)
    refs = [gym.make(env_id, **(env_kwargs or {})) for _ in range(num_envs)]
    obs = sim.reset(seed)
    for i, ref in enumerate(refs):
        np.testing.assert_allclose(obs[i], ref.reset(seed=seed + i)[0])
    rng = np.random.default_rng(0)
    low, high = sim.action_space.low, sim.action_space.high
    terminations = truncations = 0
    for t in range(steps):
        actions = rng.uniform(low, high, (num_envs,) + low.shape) * action_scale
        out = sim.step(actions)
        for i, ref in enumerate(refs):
            o, r, term, trunc, _ = ref.step(actions[i])
            where = f"{env_id} step {t} env {i}"
            np.testing.assert_allclose(out.physics["obs"][i], o, atol=1e-9, err_msg=where)
            assert out.env_reward[i] == pytest.approx(r, abs=1e-9), where
            assert (out.terminated[i], out.truncated[i]) == (term, trunc), where
            if isinstance(sim, MujocoVecSim):
                # the snapshot is the state the step ended in, before any reset
                np.testing.assert_allclose(out.physics["qpos"][i], ref.unwrapped.data.qpos, err_msg=where)
                np.testing.assert_allclose(out.physics["xpos"][i], ref.unwrapped.data.xpos, err_msg=where)
            if term or trunc:
                terminations += term
                truncations += trunc
                o = ref.reset()[0]
            np.testing.assert_allclose(out.obs[i], o, atol=1e-9, err_msg=where)
        if isinstance(sim, MujocoVecSim):
            now = sim.physics()  # after autoreset: the new episodes' first states
            for i, ref in enumerate(refs):
                np.testing.assert_allclose(now["qvel"][i], ref.unwrapped.data.qvel)
    sim.close()
    return terminations, truncations


def test_hopper_terminates_like_gymnasium():
    terminations, _ = lockstep("Hopper-v5", action_scale=1.0)
    assert terminations > 0


def test_halfcheetah_truncates_like_gymnasium():
    _, truncations = lockstep("HalfCheetah-v5", env_kwargs={"max_episode_steps": 25})
    assert truncations == 3 * 2


def test_ant_contact_forces_and_env_kwargs():
    # contact forces in obs and reward; a kwarg that changes termination
    terminations, truncations = lockstep(
        "Ant-v5", steps=40, env_kwargs={"healthy_z_range": (0.45, 1.0), "max_episode_steps": 30}
    )
    assert terminations + truncations > 0


def test_env_without_port_uses_its_own_step():
    sim = make_vecsim("InvertedPendulum-v5", 2)
    assert isinstance(sim, MujocoVecSim) and sim.port is None
    sim.close()
    terminations, _ = lockstep("InvertedPendulum-v5", action_scale=3.0)
    assert terminations > 0


def test_snapshot_layout_and_spaces():
    sim = make_vecsim("HalfCheetah-v5", 4, seed=1)
    sim.reset()
    snap = sim.physics()
    assert set(snap) == set(st.PHYSICS_KEYS) - {"cfrc_ext"}  # contact forces only when asked (test_contacts.py)
    assert snap["xpos"].shape == (4, sim.layout.bodies.__len__(), 3)
    assert sim.action_space.shape == (6,) and sim.observation_space.shape == (17,)
    assert sim.dt == pytest.approx(0.05)
    out = sim.step(np.zeros((4, 6)))
    state = st.state_pair(snap, out.physics, sim.layout, sim.dt)
    assert state.body("torso").pos.shape == (4, 3)
    sim.close()


def test_fallback_on_pendulum():
    sim = make_vecsim("Pendulum-v1", 3, seed=0, env_kwargs={"max_episode_steps": 10})
    assert isinstance(sim, GymVecSim) and sim.layout is None
    _, truncations = lockstep("Pendulum-v1", env_kwargs={"max_episode_steps": 10}, steps=25)
    assert truncations == 3 * 2
    sim.reset()
    assert set(sim.physics()) == {"obs"}
    out = sim.step(np.zeros((3, 1)))
    assert out.physics["obs"].shape == (3, 3)


@pytest.mark.parametrize(("backend", "env_id"), [("mujoco", "HalfCheetah-v5"), ("gym", "Pendulum-v1")])
def test_each_host_backend_keeps_the_contract(backend, env_id):
    sim = make_vecsim(env_id, 2, backend=backend, slabs=1)
    try:
        assert isinstance(sim, VecSim) and isinstance(sim, backend_class(backend))
        assert sim.device == HOST and isinstance(sim.device, str)  # numpy arrays out (the collector's test)
        obs = sim.reset(0)
        out = sim.step(np.zeros((2,) + sim.action_space.shape))
        assert isinstance(obs, np.ndarray) and obs.shape == (2,) + sim.observation_space.shape
        assert out.physics["obs"].shape == obs.shape and out.env_reward.shape == (2,)
    finally:
        sim.close()
    with pytest.raises(ValueError, match=f"the '{backend}' backend simulates on the CPU, not on cuda"):
        make_vecsim(env_id, 2, backend=backend, device="cuda")


def test_every_registered_backend_is_a_vecsim_and_a_wrong_name_is_refused():
    # The attributes are set per instance (isinstance checks them above, and Warp's in test_warpsim.py);
    # the methods are checked here on every backend's class, Warp's included.
    methods = {name for name, value in vars(VecSim).items() if inspect.isfunction(value) and name[0] != "_"}
    assert methods == {"reset", "step", "send", "recv", "physics", "close"}
    assert set(VecSim.__annotations__) == {"num_envs", "observation_space", "action_space", "layout", "dt", "device"}
    for name in BACKENDS:
        cls = backend_class(name)
        assert all(callable(getattr(cls, m, None)) for m in methods), name
    with pytest.raises(ValueError, match="unknown backend 'bullet'"):
        make_vecsim("HalfCheetah-v5", 2, backend="bullet")


def scaled_hopper(**kwargs):
    """A registered task's own Hopper: its entry point scales the reward and the observation."""
    env = gym.wrappers.TransformReward(HopperEnv(**kwargs), lambda r: 10.0 * r)
    return gym.wrappers.TransformObservation(env, lambda o: 0.5 * o, env.observation_space)


def test_a_mujoco_env_wrapped_by_its_entry_point_keeps_its_wrappers(monkeypatch, caplog):
    # Stepping the env under the wrappers, as the slab stepper does, would drop what they do.
    spec = EnvSpec("ScaledHopper-v0", entry_point=scaled_hopper, max_episode_steps=1000)
    monkeypatch.setitem(gym.envs.registry, spec.id, spec)
    with caplog.at_level(logging.INFO, logger="reward_designer.sim"):
        sim = make_vecsim(spec.id, 2)
    sim.close()
    assert isinstance(sim, GymVecSim)
    assert "ScaledHopper-v0 is wrapped in TransformObservation, TransformReward" in caplog.text
    terminations, _ = lockstep(spec.id)
    assert terminations > 0
    with pytest.raises(ValueError, match="TransformReward, which the 'mujoco' backend would drop"):
        make_vecsim(spec.id, 2, backend="mujoco")


def run_sim(slabs: int, env_id: str = "Hopper-v5", steps: int = 80, splits: list | None = None) -> list:
    """Outputs of a seeded run; ``splits[k]`` (sizes per process) is applied before step 5k."""
    sim = make_vecsim(env_id, 5, seed=3, slabs=slabs)
    assert len(sim.slab_sizes) == slabs
    rng = np.random.default_rng(1)
    outs = [sim.reset()]
    for t in range(steps):
        if splits and t % 5 == 0:
            sim.resplit(splits[t // 5 % len(splits)])
            assert sim.slab_sizes == splits[t // 5 % len(splits)]
        outs.append(sim.step(rng.uniform(-1, 1, (5, 3))))
    outs.append(sim.physics())
    sim.close()
    return outs


def assert_same_runs(one: list, other: list) -> None:
    for a, b in zip(one, other, strict=True):
        for x, y in zip(a, b) if isinstance(a, tuple) else [(a, b)]:
            if isinstance(x, dict):
                for k in x:
                    np.testing.assert_array_equal(x[k], y[k])
            else:
                np.testing.assert_array_equal(x, y)


def test_slabs_in_twin_processes_give_what_one_process_gives():
    # Hopper terminates often: resets happen in whichever process owns the env.
    one, three = run_sim(1), run_sim(3)
    assert sum(int(o.terminated.sum()) for o in one[1:-1]) > 0
    assert_same_runs(one, three)


def test_envs_moved_between_processes_mid_episode_step_and_reset_as_if_never_moved():
    # Every env changes process several times, mid-episode and between resets:
    # its MuJoCo state (warm start included) and its reset RNG go with it.
    splits = [[1, 1, 3], [3, 1, 1], [1, 3, 1], [2, 2, 1]]
    assert_same_runs(run_sim(1, steps=120), run_sim(3, steps=120, splits=splits))


def test_resplit_refuses_bad_sizes_and_envs_it_cannot_move():
    sim = make_vecsim("Hopper-v5", 4, slabs=2)
    try:
        for sizes in ([4, 0], [2, 1], [1, 1, 2]):
            with pytest.raises(ValueError, match="sizes must be"):
                sim.resplit(sizes)
    finally:
        sim.close()
    sim = make_vecsim("InvertedPendulum-v5", 4, slabs=2)  # no port: may keep state outside MjData
    try:
        assert not sim.movable
        with pytest.raises(RuntimeError, match="stay in their slabs"):
            sim.resplit([1, 3])
    finally:
        sim.close()


def test_a_busy_caller_gets_a_smaller_slab():
    # Work between send and recv (the trainer's reward) is this process's: the
    # balance hands its envs to the twin, which waits otherwise.
    sim = make_vecsim("HalfCheetah-v5", 8, slabs=2)
    sim.reset()
    assert sim.slab_sizes == [4, 4]
    for _ in range(4 * BALANCE_EVERY):  # one env moves per balance
        sim.send(np.zeros((8, 6)))
        time.sleep(0.002)  # the time of dozens of HalfCheetah env steps
        sim.recv()
    assert sim.slab_sizes == [1, 7]
    sim.close()


def test_a_killed_slab_twin_is_an_error_not_a_hang():
    sim = make_vecsim("HalfCheetah-v5", 4, seed=0, slabs=2)
    sim.reset()
    pid = sim._twins[0].pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(TwinDied, match="SIGKILL"):
        sim.step(np.zeros((4, 6)))
    sim.close()


def test_an_env_that_raises_in_a_twin_is_reported_with_its_traceback(monkeypatch):
    from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv

    step = InvertedPendulumEnv.step

    def broken(self, action):
        if os.getpid() != parent:  # only in the twin
            raise FloatingPointError("boom in a slab")
        return step(self, action)

    monkeypatch.setattr(InvertedPendulumEnv, "step", broken)  # before the fork: the twin inherits it
    parent = os.getpid()
    sim = make_vecsim("InvertedPendulum-v5", 2, seed=0, slabs=2)
    sim.reset()
    with pytest.raises(TwinDied, match="boom in a slab"):
        sim.step(np.zeros((2, 1)))
    sim.close()


def test_an_env_that_raises_here_leaves_the_twins_in_step(monkeypatch):
    from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv

    step, calls = InvertedPendulumEnv.step, []

    def broken_once(self, action):
        if os.getpid() == parent and not calls:  # this process's slab, first step only
            calls.append(1)
            raise FloatingPointError("boom here")
        return step(self, action)

    monkeypatch.setattr(InvertedPendulumEnv, "step", broken_once)
    parent = os.getpid()
    sim = make_vecsim("InvertedPendulum-v5", 2, seed=0, slabs=2)
    try:
        sim.reset()
        with pytest.raises(FloatingPointError, match="boom here"):
            sim.step(np.zeros((2, 1)))
        # The twin's answer to that step was taken: requests and answers still pair up,
        # with no stray answer left behind to be mistaken for the next one's.
        assert sim.reset().shape == (2, 4)
        assert sim.step(np.zeros((2, 1))).obs.shape == (2, 4)
        assert select.select([sim._twins[0].recv_fd], [], [], 0.5)[0] == []
    finally:
        sim.close()


def test_a_request_to_the_twins_cut_short_stops_the_sim(monkeypatch):
    # Ctrl-C while waiting for a twin, caught (as a notebook does): the twin's answer to that step is
    # still to come, and the next request would take it for its own. The sim must refuse instead.
    def interrupted(self, msg):
        raise KeyboardInterrupt

    sim = make_vecsim("HalfCheetah-v5", 4, seed=0, slabs=2)
    try:
        sim.reset()
        pid = sim._twins[0].pid
        with monkeypatch.context() as m:
            m.setattr(Twin, "expect", interrupted)  # in this process only: the twin is forked already
            with pytest.raises(KeyboardInterrupt):
                sim.step(np.zeros((4, 6)))
        for use in (sim.reset, sim.physics, lambda: sim.step(np.zeros((4, 6))), sim.recv):
            with pytest.raises(RuntimeError, match="make a new simulator"):
                use()
        with pytest.raises(ChildProcessError):  # the twin was ended and reaped
            os.waitpid(pid, os.WNOHANG)
    finally:
        sim.close()


def test_a_sim_dropped_without_close_ends_its_twins():
    sim = make_vecsim("HalfCheetah-v5", 2, slabs=2)
    pid = sim._twins[0].pid
    del sim
    gc.collect()
    with pytest.raises(ChildProcessError):  # ended and reaped, not left running
        os.waitpid(pid, os.WNOHANG)


def test_closing_a_twin_twice_leaves_alone_the_files_that_took_its_fds():
    twin = Twin(lambda twin: twin.read(1))
    old = {twin.send_fd, twin.recv_fd}
    twin.close()
    files = [os.open(os.devnull, os.O_RDONLY) for _ in range(32)]  # the lowest free numbers: the twin's among them
    try:
        assert old <= set(files)
        twin.close()
        for fd in files:
            os.fstat(fd)  # still open
        for use in (lambda: twin.send(b"s"), lambda: twin.read(1)):
            with pytest.raises(RuntimeError, match="twin is closed"):
                use()
    finally:
        for fd in files:
            os.close(fd)


def test_closing_one_of_several_twins_does_not_wait_on_the_others():
    # Each twin must hold no copy of another twin's pipe: else close() would hang.
    code = (
        "from reward_designer.sim import make_vecsim\n"
        "a = make_vecsim('HalfCheetah-v5', 6, slabs=3)\n"
        "b = make_vecsim('HalfCheetah-v5', 2, slabs=2)\n"
        "a.close(); b.close(); print('closed')\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "closed", out.stderr[-2000:]


def test_send_and_recv_pair_up():
    sim = make_vecsim("HalfCheetah-v5", 4, seed=0, slabs=2)
    try:
        sim.reset()
        with pytest.raises(RuntimeError, match="no step in flight"):
            sim.recv()
        sim.send(np.zeros((4, 6)))
        for misuse in (lambda: sim.send(np.zeros((4, 6))), sim.physics, sim.reset):
            with pytest.raises(RuntimeError, match="in flight"):
                misuse()
        out = sim.recv()  # the step sent before the refused calls, unharmed
        assert out.obs.shape == (4, 17) and not out.terminated.any()
        np.testing.assert_array_equal(sim.physics()["qpos"], out.physics["qpos"])
    finally:
        sim.close()


def test_mujoco_warnings_are_python_warnings_and_leave_no_log_file(tmp_path):
    """MuJoCo's handler would print gymnasium's settotalmass deprecation for every HalfCheetah made
    and append it to MUJOCO_LOG.TXT in the cwd; routed, it is dropped and nothing is written."""
    script = ("from reward_designer.envcard import EnvCard\n"
              "from reward_designer.sim import make_vecsim\n"
              "EnvCard.from_env('HalfCheetah-v5')\n"
              "sim = make_vecsim('HalfCheetah-v5', 4, slabs=2)\n"
              "sim.reset(); sim.close()\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "settotalmass" not in proc.stdout + proc.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()

    import mujoco

    from reward_designer.mjlog import MujocoWarning

    model = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody><body><freejoint/><geom size='.1'/></body></worldbody></mujoco>")
    data = mujoco.MjData(model)
    data.qvel[:] = 1e30
    with pytest.warns(MujocoWarning, match="unstable"):
        mujoco.mj_step(model, data)
