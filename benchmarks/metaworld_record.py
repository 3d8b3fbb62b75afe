"""Record reference trajectories from the original Meta-World envs, for tests/test_metaworld.py.

Runs in a separate venv that holds the published package and the MuJoCo it pins
(metaworld 3.1.1 needs mujoco==3.3.0, which ours cannot be):

    python -m venv /tmp/mw && /tmp/mw/bin/pip install metaworld==3.1.1 packaging
    /tmp/mw/bin/python benchmarks/metaworld_record.py tests/data/metaworld

For each MT10 task, two episodes from a goal of the MT1 benchmark (seeds 0 and 1):
Meta-World's own scripted policy (so that success happens) and uniform random
actions. Per step it keeps the action, the observation, the env's reward and
success, and qpos/qvel/mocap; per episode the random vector the reset drew
(object and goal positions), from which our env resets to the same start.
"""

from __future__ import annotations

import sys
from pathlib import Path

import metaworld
import mujoco
import numpy as np
from metaworld import policies

MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]
POLICIES = {
    "reach-v3": "SawyerReachV3Policy", "push-v3": "SawyerPushV3Policy", "pick-place-v3": "SawyerPickPlaceV3Policy",
    "door-open-v3": "SawyerDoorOpenV3Policy", "drawer-open-v3": "SawyerDrawerOpenV3Policy",
    "drawer-close-v3": "SawyerDrawerCloseV3Policy", "button-press-topdown-v3": "SawyerButtonPressTopdownV3Policy",
    "peg-insert-side-v3": "SawyerPegInsertionSideV3Policy", "window-open-v3": "SawyerWindowOpenV3Policy",
    "window-close-v3": "SawyerWindowCloseV3Policy",
}
STEPS = 150  # long enough for every scripted policy here to succeed
# What a reward reads besides the MjData, as each reset left it: our SawyerEnv's name -> metaworld's.
EPISODE_CONSTANTS = {"target_pos": "_target_pos", "obj_init_pos": "obj_init_pos", "init_tcp": "init_tcp",
                     "peg_head_init": "peg_head_pos_init", "handle_init": "window_handle_pos_init",
                     "obj_to_target_init": "_obj_to_target_init"}


def episode(name: str, seed: int, scripted: bool) -> dict[str, np.ndarray]:
    bench = metaworld.MT1(name, seed=seed)
    env = bench.train_classes[name]()
    env.set_task(bench.train_tasks[0])
    obs, _ = env.reset()
    policy = getattr(policies, POLICIES[name])()
    rng = np.random.default_rng(seed)
    rec: dict[str, list] = {k: [] for k in ("action", "obs", "reward", "success", "qpos", "qvel", "mocap_pos")}
    first = {"obs0": obs.copy(), "qpos0": env.data.qpos.copy(), "qvel0": env.data.qvel.copy(),
             "rand_vec": np.asarray(env._last_rand_vec, dtype=np.float64).copy()}
    first.update({f"const_{ours}": np.array(getattr(env, theirs), dtype=np.float64)
                  for ours, theirs in EPISODE_CONSTANTS.items() if getattr(env, theirs, None) is not None})
    for _ in range(STEPS):
        if scripted:
            action = np.clip(policy.get_action(obs) + rng.normal(0, 0.1, 4), -1, 1)
        else:
            action = rng.uniform(-1, 1, 4)
        action = action.astype(np.float32)
        obs, reward, _, _, info = env.step(action)
        for key, value in (("action", action), ("obs", obs), ("reward", reward), ("success", info["success"]),
                           ("qpos", env.data.qpos), ("qvel", env.data.qvel), ("mocap_pos", env.data.mocap_pos[0])):
            rec[key].append(np.array(value, copy=True))
    return {**first, **{k: np.stack(v) for k, v in rec.items()}}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in MT10:
        arrays = {}
        for seed, scripted in ((0, True), (1, False)):
            tag = "scripted" if scripted else "random"
            for key, value in episode(name, seed, scripted).items():
                arrays[f"{tag}/{key}"] = value
            print(name, tag, "success at the end:", arrays[f"{tag}/success"][-1],
                  "first success step:", int(np.argmax(arrays[f"{tag}/success"] > 0)) if arrays[f"{tag}/success"].any()
                  else None)
        np.savez_compressed(out / f"{name}.npz", mujoco_version=mujoco.__version__,
                            metaworld_version=metaworld.__version__ if hasattr(metaworld, "__version__") else "3.1.1",
                            **arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/metaworld"))
