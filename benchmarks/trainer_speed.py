"""Training speed: our PPO vs stable-baselines3 PPO, env steps per second.

Every measurement runs in its own child process, one after another, so they
share the machine the same way; each times its training call only (imports,
env construction and process start excluded), on the env's own reward. Rows:

  raw mj_step       one MjData stepped in a loop on one core: the simulator's floor
  vecsim            our batched simulator alone, random actions, no learning
  ours              our PPO with the env's preset (batched simulator, both cores)
  ours+reward       the same, reward from a batched program written against state.State,
                    through the worker's per-step reward (worker.StepReward: checks, and
                    each component metered per episode), as a candidate's training runs it
  ours+heavy-reward the same with the program computed 10 times per step: a costlier reward,
                    which the simulator's slab balance moves work away from (sim/slabs.py)
  sb3-defaults      SB3 PPO("MlpPolicy", env), one env
  sb3-tuned         SB3 PPO, 16 envs in a DummyVecEnv, n_steps 128, batch_size 512

Every row runs one torch thread per process, the fastest setting on these
machines for both sides (measured before these benchmarks were written). So SB3, which steps its envs and learns in
one process, uses one core; ours uses both through its own processes (the
simulator's slab twin, the forked learner). raw mj_step is one core too.

With the ``warp`` extra, three rows run MuJoCo Warp (``sim/warp.py``) with
--warp-envs worlds on the GPU if there is one (else on Warp's CPU backend,
for trying the rows out: slow). Not in the default rows. Kernel compilation
and graph capture happen in a warm-up step before the timing:

  raw warp          mujoco_warp.step on the worlds, frame_skip steps a call: the batch's floor
  warpsim           our Warp simulator alone (observations, rewards, resets), random actions
  ours-warp         our PPO on it, policy and rollout on the same device, env reward;
                    the warp preset (presets.preset_for), then --set, then num_envs --warp-envs

--candidate also times a whole 1M-step HalfCheetah candidate as a design run
trains it: the reward program above through the sandboxed worker
(``Trainer.train``), from the worker's start to its saved policy file, and
prints the env-steps/s of its training.

    python benchmarks/trainer_speed.py --steps 100000
    python benchmarks/trainer_speed.py --envs HalfCheetah-v5 --rows ours ours+reward sb3-tuned --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from child_runs import overrides_or_exit, run_child

ROWS = ["raw mj_step", "vecsim", "ours", "ours+reward", "ours+heavy-reward", "sb3-defaults", "sb3-tuned"]
WARP_ROWS = ["raw warp", "warpsim", "ours-warp"]


def compute_reward(state, action):
    """A typical LLM-written dense reward: forward speed of the torso, a control cost."""
    forward = state.body("torso").linvel[:, 0]
    ctrl = 0.1 * action.square().sum(-1)
    return forward - ctrl, {"forward": forward, "ctrl": -ctrl}


def heavy_reward(state, action):
    for _ in range(10):
        out = compute_reward(state, action)
    return out


def warp_child(row: str, env_id: str, steps: int, worlds: int, overrides: dict) -> float:
    """One MuJoCo Warp measurement in this process; env steps per second."""
    import torch

    from reward_designer.ppo import PPOConfig, train
    from reward_designer.presets import preset_for
    from reward_designer.sim.warp import WarpVecSim

    sim = WarpVecSim(env_id, worlds, seed=0)
    sim.reset()
    sync = torch.cuda.synchronize if sim.device.type == "cuda" else (lambda: None)
    vector_steps = max(1, steps // worlds)
    if row == "raw warp":
        sim._physics_steps()  # compiles the kernels, captures the graph
        sync()
        t0 = time.perf_counter()
        for _ in range(vector_steps):
            sim._physics_steps()
        sync()
        return vector_steps * worlds / (time.perf_counter() - t0)
    if row == "warpsim":
        actions = torch.rand((64, worlds) + sim.action_space.shape, device=sim.device) * 2 - 1
        sim.step(actions[0])
        sync()
        t0 = time.perf_counter()
        for k in range(vector_steps):
            sim.step(actions[k % 64])
        sync()
        return vector_steps * worlds / (time.perf_counter() - t0)
    cfg = PPOConfig.from_dict({**preset_for(env_id, "warp"), **overrides, "num_envs": worlds, "total_steps": steps,
                               "device": sim.device.type})
    sim.warm_up()  # compile outside the timing; train() resets the batch
    t0 = time.perf_counter()
    train(sim, cfg)
    sync()
    seconds = time.perf_counter() - t0
    return max(1, steps // (worlds * cfg.num_steps)) * worlds * cfg.num_steps / seconds


def child(row: str, env_id: str, steps: int, overrides: dict) -> float:
    """Run one measurement in this process; return env steps per second."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    if row == "raw mj_step":
        import gymnasium as gym
        import mujoco

        env = gym.make(env_id).unwrapped
        env.reset(seed=0)
        m, d = env.model, env.data
        n = min(steps, 20_000)
        t0 = time.perf_counter()
        for _ in range(n):
            mujoco.mj_step(m, d, nstep=env.frame_skip)
        return n / (time.perf_counter() - t0)

    from reward_designer.ppo import PPOConfig, train
    from reward_designer.presets import preset_for
    from reward_designer.sim import make_vecsim
    from reward_designer.worker import StepReward

    if row in ("vecsim", "ours", "ours+reward", "ours+heavy-reward"):
        cfg = PPOConfig.from_dict({**preset_for(env_id), **overrides, "total_steps": steps})
        sim = make_vecsim(env_id, cfg.num_envs, seed=0)
        if row == "vecsim":
            sim.reset()
            rng = np.random.default_rng(0)
            actions = rng.uniform(-1, 1, (64, sim.num_envs) + sim.action_space.shape)
            t0 = time.perf_counter()
            for k in range(steps // sim.num_envs):
                sim.step(actions[k % 64])
            return steps // sim.num_envs * sim.num_envs / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        if row == "ours":
            train(sim, cfg)
        else:
            program = heavy_reward if row == "ours+heavy-reward" else compute_reward
            reward_fn = StepReward(program, None, "sum", sim.layout, sim.dt, sim.num_envs, cfg.device)
            train(sim, cfg, reward_fn=reward_fn, on_iteration=lambda stats: reward_fn.episode_means())
        seconds = time.perf_counter() - t0
        done = max(1, cfg.total_steps // (cfg.num_envs * cfg.num_steps)) * cfg.num_envs * cfg.num_steps  # as train()
        return done / seconds

    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger

    if row == "sb3-defaults":
        model = PPO("MlpPolicy", gym.make(env_id), seed=0, device="cpu")
    else:
        model = PPO("MlpPolicy", make_vec_env(env_id, n_envs=16, seed=0), n_steps=128, batch_size=512,
                    seed=0, device="cpu")
    model.set_logger(Logger(None, []))  # SB3's default logger leaves an empty SB3-* folder in /tmp per run
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model.num_timesteps / (time.perf_counter() - t0)


def candidate(steps: int, overrides: dict) -> None:
    """A candidate's training as a design run does it: the sandboxed worker, the reward program, saved weights."""
    import inspect
    import tempfile
    from pathlib import Path

    from reward_designer.trainer import Trainer

    trainer = Trainer("HalfCheetah-v5", steps, ppo=overrides)
    trainer.check()  # once per design run, not per candidate
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = trainer.train(inspect.getsource(compute_reward), Path(tmp))
        seconds = time.perf_counter() - t0
        if not out.ok or not (Path(tmp) / "policy.npz").is_file():
            raise RuntimeError(f"the candidate failed: {out.problem or out.result.error}")
    r = out.result
    print(f"{steps}-step HalfCheetah-v5 candidate with a reward program, sandboxed worker start to saved policy: "
          f"{seconds:.1f} s; its training {r.steps} steps in {r.seconds:.1f} s, {r.steps_per_second:.0f} env-steps/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100_000, help="env steps per measurement (ours: in whole PPO batches; raw mj_step: at most 20000)")
    p.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Ant-v5"])
    p.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS + WARP_ROWS)
    p.add_argument("--warp-envs", type=int, default=4096, help="worlds in a MuJoCo Warp batch (the warp rows)")
    p.add_argument("--repeat", type=int, default=1, help="measure every row this many times, keep the median")
    p.add_argument("--candidate", action="store_true", help="also time a 1M-step HalfCheetah candidate end to end")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="PPOConfig overrides for ours on top of the preset, e.g. update_epochs=5")
    p.add_argument("--child", nargs=4, metavar=("ROW", "ENV", "STEPS", "WORLDS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    overrides = overrides_or_exit(p, args.set)
    if args.child:
        row, env_id, steps, worlds = args.child
        rate = (warp_child(row, env_id, int(steps), int(worlds), overrides) if row in WARP_ROWS
                else child(row, env_id, int(steps), overrides))
        print(json.dumps(rate))
        return

    print(f"{args.steps} env steps per measurement; each row a separate process, run one after another"
          + (f"; rows taken in turn {args.repeat} times, the median kept" if args.repeat > 1 else ""))
    for env_id in args.envs:
        runs: dict[str, list[float]] = {row: [] for row in args.rows}
        for _ in range(args.repeat):  # in turn, so a slow spell of a shared machine hits every row alike
            for row in args.rows:
                runs[row].append(run_child(__file__, ["--child", row, env_id, str(args.steps), str(args.warp_envs),
                                                      "--set", *args.set], pinned=row.startswith("ours"),
                                           what=f"{row} on {env_id}"))
        rates = {row: statistics.median(r) for row, r in runs.items()}
        for row in args.rows:
            spread = f"  (runs: {', '.join(f'{r:.0f}' for r in runs[row])})" if args.repeat > 1 else ""
            print(f"{env_id:16s} {row:17s} {rates[row]:9.0f} env-steps/s{spread}", flush=True)
        for ours in ("ours", "ours+reward", "ours+heavy-reward", "ours-warp"):
            for other in ("sb3-defaults", "sb3-tuned", "raw mj_step", "raw warp"):
                if ours in rates and other in rates:
                    print(f"{env_id:16s} {ours} / {other}: {rates[ours] / rates[other]:.2f}x")
    if args.candidate:
        candidate(1_000_000, overrides)


if __name__ == "__main__":
    main()
