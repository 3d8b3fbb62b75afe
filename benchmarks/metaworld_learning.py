"""Does our PPO learn a Meta-World task on the env's own dense reward (the cards' expert)?

Trains with the env's preset (presets.preset_for: the base one, no Meta-World
preset yet) on our batched simulator, then runs the deterministic policy for
--episodes fresh episodes per seed and prints the success rate (the env's own
check at any step, as the cards' fitness counts it) and the wall time:

    python benchmarks/metaworld_learning.py --task reach-v3 --steps 300000 --seeds 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def run(task: str, steps: int, seed: int, episodes: int, overrides: dict) -> tuple[float, float]:
    import gymnasium as gym

    from reward_designer.ppo import PPOConfig, train
    from reward_designer.presets import preset_for
    from reward_designer.sim import make_vecsim
    from reward_designer.sim.metaworld import env_id

    eid = env_id(task)
    cfg = PPOConfig.from_dict({**preset_for(eid), **overrides, "total_steps": steps, "seed": seed})
    sim = make_vecsim(eid, cfg.num_envs, seed=seed)
    t0 = time.perf_counter()
    try:
        policy = train(sim, cfg)
    finally:
        sim.close()
    seconds = time.perf_counter() - t0
    env = gym.make(eid)
    wins = 0
    for k in range(episodes):
        obs, _ = env.reset(seed=10_000 + 100 * seed + k)  # episodes the training never saw
        done, success = False, False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy.act(obs[None], deterministic=True)[0])
            success |= bool(info["success"])
            done = terminated or truncated
        wins += success
    env.close()
    return wins / episodes, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach-v3")
    p.add_argument("--steps", type=int, default=300_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="PPOConfig overrides")
    args = p.parse_args()
    from reward_designer.presets import check_overrides, read_value

    overrides = check_overrides({k: read_value(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    rates = []
    for seed in args.seeds:
        rate, seconds = run(args.task, args.steps, seed, args.episodes, overrides)
        rates.append(rate)
        print(f"{args.task} seed {seed}: success {rate:.2f} over {args.episodes} episodes after {args.steps} steps "
              f"({seconds:.0f} s, {args.steps / seconds:.0f} env-steps/s)", flush=True)
    print(f"{args.task}: mean success {np.mean(rates):.2f} over seeds {args.seeds}")


if __name__ == "__main__":
    main()
