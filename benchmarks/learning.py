"""Learning quality: our PPO (per-task preset) vs stable-baselines3 PPO defaults.

Each trains for --steps env steps per seed on each env, then both are evaluated
the same way: deterministic actions on fresh gymnasium envs, mean return over
--eval-episodes. Prints every run and the median final eval return per env.

    python benchmarks/learning.py                       # 1M steps, 3 seeds, HalfCheetah + Hopper
    python benchmarks/learning.py --steps 200000 --seeds 1 --envs HalfCheetah-v5
    python benchmarks/learning.py --only sb3 --first-seed 1 --seeds 2  # add seeds 1 and 2
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

from reward_designer.ppo import PPOConfig, train
from reward_designer.presets import preset_for
from reward_designer.vecsim import make_vecsim


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


def run_ours(env_id: str, steps: int, seed: int, episodes: int, overrides: dict) -> tuple[float, float]:
    cfg = PPOConfig.from_dict({**preset_for(env_id), **overrides, "total_steps": steps, "seed": seed})
    t0 = time.perf_counter()
    sim = make_vecsim(env_id, cfg.num_envs, seed=seed)
    policy = train(sim, cfg)
    sim.close()
    seconds = time.perf_counter() - t0
    return evaluate(lambda o: policy.act(o), env_id, episodes, seed), seconds


def run_sb3(env_id: str, steps: int, seed: int, episodes: int) -> tuple[float, float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    t0 = time.perf_counter()
    model = PPO("MlpPolicy", gym.make(env_id), seed=seed, device="cpu")
    model.set_logger(Logger(None, []))  # SB3's default logger leaves an empty SB3-* folder in /tmp per run
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - t0
    return evaluate(lambda o: model.predict(o, deterministic=True)[0], env_id, episodes, seed), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed .. first-seed+seeds-1")
    p.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--only", choices=["ours", "sb3"], help="run one side only")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="PPOConfig overrides for ours on top of the preset, e.g. update_epochs=5")
    args = p.parse_args()
    overrides = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    torch.set_num_threads(1)

    results: dict[tuple[str, str], list[float]] = {}
    for env_id in args.envs:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for who in ("ours", "sb3"):
                if args.only and who != args.only:
                    continue
                if who == "ours":
                    ret, sec = run_ours(env_id, args.steps, seed, args.eval_episodes, overrides)
                else:
                    ret, sec = run_sb3(env_id, args.steps, seed, args.eval_episodes)
                results.setdefault((env_id, who), []).append(ret)
                print(f"{env_id:16s} {who:4s} seed {seed}: eval return {ret:9.1f}  "
                      f"({sec:6.1f} s, {args.steps / sec:7.0f} steps/s)", flush=True)

    print(f"\nmedian final eval return over {args.seeds} seed(s), {args.steps} steps, "
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


if __name__ == "__main__":
    main()
