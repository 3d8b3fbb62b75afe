"""Learning quality: our PPO (per-task preset) vs stable-baselines3 PPO defaults.

Each trains for --steps env steps per seed on each env (ours in whole PPO
batches, rounded down; SB3 in whole rollouts, rounded up: each line says how
many steps it trained), then both are evaluated
the same way: deterministic actions on fresh gymnasium envs, mean return over
--eval-episodes. Prints every run and the median final eval return per env.

--spread K also evaluates the policy after each of the last K updates (ours)
or rollouts (SB3) and prints their min / median / max: on Hopper the final
eval return of one run can move by a thousand or more from one update to the
next, which a single final evaluation hides. The reported seconds leave
those evaluations out.

Each run is a process of its own: ours loads numpy and torch with the numerics pins a
training worker gets (reward_designer/numerics.py), SB3 with the code paths its torch picks.

    python benchmarks/learning.py                       # 1M steps, 3 seeds, HalfCheetah + Hopper
    python benchmarks/learning.py --steps 200000 --seeds 1 --envs HalfCheetah-v5
    python benchmarks/learning.py --only sb3 --first-seed 1 --seeds 2  # add seeds 1 and 2
    python benchmarks/learning.py --envs Hopper-v5 --spread 20
    python benchmarks/learning.py --only ours --sim warp    # ours on MuJoCo Warp (a GPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from child_runs import overrides_or_exit, run_child
from reward_designer.ppo import PPOConfig, make_learner, train
from reward_designer.presets import parse_overrides, preset_for
from reward_designer.sim import make_vecsim


def evaluate(act, env_id: str, episodes: int, seed: int) -> float:
    """Mean return of ``act(obs) -> action`` over fresh episodes."""
    env = gym.make(env_id)
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=10_000 + 100 * seed + k)
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return float(np.mean(returns))


class Spread:
    """Eval returns after each of the last ``k`` updates (at least the final one), and the seconds they took."""

    def __init__(self, act, env_id: str, episodes: int, seed: int, k: int):
        self.act, self.env_id, self.episodes, self.seed, self.k = act, env_id, episodes, seed, k
        self.returns: list[float] = []
        self.seconds = 0.0

    def __call__(self, updates_left: int) -> None:
        """Evaluate now if the policy is within the last ``k`` updates (``updates_left`` still to come)."""
        if updates_left < max(self.k, 1):
            t0 = time.perf_counter()
            self.returns.append(evaluate(self.act, self.env_id, self.episodes, self.seed))
            self.seconds += time.perf_counter() - t0


def run_ours(env_id: str, steps: int, seed: int, episodes: int, overrides: dict,
             spread_k: int, simulator: str = "mujoco") -> tuple[float, float, int, list[float]]:
    """(final eval return, training seconds, env steps trained, the last spread_k eval returns)."""
    cfg = PPOConfig.from_dict({**preset_for(env_id, simulator), **overrides, "total_steps": steps, "seed": seed})
    t0 = time.perf_counter()
    if simulator == "warp":  # on the GPU if there is one; the policy goes where the batch is
        sim = make_vecsim(env_id, cfg.num_envs, seed=seed, backend="warp")
        sim.warm_up()  # kernels compiled (and a GPU step captured) before the clock starts
        cfg.device = sim.device.type
        t0 = time.perf_counter()
    else:
        sim = make_vecsim(env_id, cfg.num_envs, seed=seed)
    learner = make_learner(sim, cfg)
    policy = learner.policy  # updated in place by every update
    spread = Spread(lambda o: policy.act(o), env_id, episodes, seed, spread_k)
    trained = [0]

    def on_iteration(info: dict) -> None:
        trained[0] = info["global_step"]
        spread(info["iterations"] - info["iteration"])

    train(sim, cfg, on_iteration=on_iteration, learner=learner)
    sim.close()
    seconds = time.perf_counter() - t0 - spread.seconds
    return spread.returns[-1], seconds, trained[0], spread.returns


def run_sb3(env_id: str, steps: int, seed: int, episodes: int, spread_k: int) -> tuple[float, float, int, list[float]]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    class AfterUpdates(BaseCallback):
        def _on_rollout_start(self) -> None:  # the policy has had num_timesteps / n_steps updates
            done = self.model.num_timesteps // self.model.n_steps
            if done > 0:
                spread(rollouts - done)

        def _on_step(self) -> bool:
            return True

    t0 = time.perf_counter()
    model = PPO("MlpPolicy", gym.make(env_id), seed=seed, device="cpu")
    model.set_logger(Logger(None, []))  # SB3's default logger leaves an empty SB3-* folder in /tmp per run
    rollouts = -(-steps // model.n_steps)  # learn() runs whole rollouts until it has the steps
    spread = Spread(lambda o: model.predict(o, deterministic=True)[0], env_id, episodes, seed, spread_k)
    model.learn(total_timesteps=steps, callback=AfterUpdates() if spread_k else None)
    seconds = time.perf_counter() - t0 - spread.seconds
    spread(0)
    return spread.returns[-1], seconds, model.num_timesteps, spread.returns


def child(args, who: str, env_id: str, seed: str) -> tuple[float, float, int, list[float]]:
    """One run, in this process (a child of main's)."""
    torch.set_num_threads(1)
    if who == "ours":
        return run_ours(env_id, args.steps, int(seed), args.eval_episodes, parse_overrides(args.set), args.spread,
                        args.sim)
    return run_sb3(env_id, args.steps, int(seed), args.eval_episodes, args.spread)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed .. first-seed+seeds-1")
    p.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--only", choices=["ours", "sb3"], help="run one side only")
    p.add_argument("--sim", choices=["mujoco", "warp"], default="mujoco",
                   help="what ours trains on: MuJoCo on the CPU, or a MuJoCo Warp batch (GPU if there is one) "
                        "with the warp preset")
    p.add_argument("--spread", type=int, default=0, metavar="K",
                   help="also evaluate after each of the last K updates and print min / median / max")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="PPOConfig overrides for ours on top of the preset, e.g. update_epochs=5")
    p.add_argument("--child", nargs=3, metavar=("WHO", "ENV", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args, *args.child)))
        return
    overrides_or_exit(p, args.set)

    results: dict[tuple[str, str], list[float]] = {}
    spreads: dict[tuple[str, str], list[float]] = {}  # every seed's last-K evals, pooled
    for env_id in args.envs:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for who in ("ours", "sb3"):
                if args.only and who != args.only:
                    continue
                ret, sec, trained, spread = run_child(__file__, [*sys.argv[1:], "--child", who, env_id, str(seed)],
                                                      pinned=who == "ours", what=f"{who} on {env_id}, seed {seed}")
                results.setdefault((env_id, who), []).append(ret)
                spreads.setdefault((env_id, who), []).extend(spread)
                line = (f"{env_id:16s} {who:4s} seed {seed}: eval return {ret:9.1f}  "
                        f"({trained} steps in {sec:6.1f} s, {trained / sec:7.0f} steps/s)")
                if args.spread:
                    line += (f"  last {len(spread)} updates: min {min(spread):7.1f} median "
                             f"{statistics.median(spread):7.1f} max {max(spread):7.1f}")
                print(line, flush=True)

    print(f"\nmedian final eval return over {args.seeds} seed(s), --steps {args.steps}, "
          f"{args.eval_episodes} deterministic episodes each")
    for env_id in args.envs:
        ours = results.get((env_id, "ours"))
        sb3 = results.get((env_id, "sb3"))
        row = f"{env_id:16s}"
        if ours:
            row += f"  ours {statistics.median(ours):9.1f}"
        if sb3:
            row += f"  sb3-defaults {statistics.median(sb3):9.1f}"
        if ours and sb3:
            row += f"  ours-sb3 {statistics.median(ours) - statistics.median(sb3):+9.1f}"
        print(row)
    if args.spread:
        print(f"\nmedian eval return after the last {args.spread} updates of every seed, pooled")
        for env_id in args.envs:
            print(f"{env_id:16s}" + "".join(f"  {who} {statistics.median(spreads[env_id, who]):9.1f}"
                                            for who in ("ours", "sb3") if (env_id, who) in spreads))


if __name__ == "__main__":
    main()
