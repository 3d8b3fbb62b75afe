"""MuJoCo's warnings as Python warnings (``MujocoWarning``).

MuJoCo's own handler prints every warning and appends it to MUJOCO_LOG.TXT in
the current directory, so each worker that compiled HalfCheetah's XML put a
line on the user's console and in a file in the user's folder. As Python
warnings they follow the warnings filters instead: by default each message
shows once per process. The deprecation that gymnasium's own XML raises under
MuJoCo 4 (``settotalmass``) is not the user's to fix, so it is dropped.
"""

from __future__ import annotations

import warnings

import mujoco


class MujocoWarning(UserWarning):
    """A warning from MuJoCo's C library: an unstable simulation, a deprecated model attribute."""


# Dropped here rather than by a warnings filter, which pytest and `python -W` replace.
NOT_THE_USERS = ("compiler attribute 'settotalmass' is deprecated",)


def _warn(message: str) -> None:
    if not any(known in message for known in NOT_THE_USERS):
        warnings.warn(message.strip(), MujocoWarning, stacklevel=2)


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to ``warnings.warn``, unless the process already set its own handler."""
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_warn)
