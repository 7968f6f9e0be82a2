"""
Environments: robomimic tasks (robosuite) as Gymnasium envs.

Importing this package registers the Gymnasium ids below and needs neither robosuite nor h5py; creating one of
the envs needs the optional extra (``pip install -e ".[robosuite]"``)::

    import gymnasium as gym
    import sb3_expo.envs  # registers the ids

    env = gym.make("sb3_expo/RobomimicLift-v0")                                   # built-in Lift env_args
    env = gym.make("sb3_expo/RobomimicLift-v0", env_args="data/lift_scripted.hdf5")  # a dataset's env_args

RL Zoo: ``python -m rl_zoo3.train --env sb3_expo/RobomimicLift-v0 --gym-packages sb3_expo.envs ...`` (the zoo
checks the id against the registry, so ``--gym-packages`` is needed; its log folder is ``sb3_expo-RobomimicLift-v0_N``).
Plain ``gym.make("sb3_expo.envs:sb3_expo/RobomimicLift-v0")`` imports this package itself.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

# id -> (robosuite task, TimeLimit = robomimic's rollout horizon)
ROBOMIMIC_ENV_IDS: dict[str, tuple[str, int]] = {
    "sb3_expo/RobomimicLift-v0": ("Lift", 400),
    "sb3_expo/RobomimicCan-v0": ("PickPlaceCan", 400),
    "sb3_expo/RobomimicSquare-v0": ("NutAssemblySquare", 400),
}

for _env_id, (_task, _horizon) in ROBOMIMIC_ENV_IDS.items():
    if _env_id not in gym.registry:  # re-importing (e.g. importlib.reload) must not warn about re-registration
        gym.register(
            id=_env_id,
            # A string entry point: robosuite is imported only when the env is made.
            entry_point="sb3_expo.envs.robomimic_env:RobomimicEnv",
            max_episode_steps=_horizon,
            kwargs={"env_args": _task},
        )

_LAZY = {
    name: "sb3_expo.envs.robomimic_env"
    for name in (
        "DEFAULT_HORIZONS",
        "DEFAULT_OBS_KEYS",
        "ROBOSUITE_INSTALL_HINT",
        "RobomimicEnv",
        "default_env_args",
        "env_horizon",
        "import_robosuite",
        "make_robomimic_env",
        "read_env_args",
        "resolve_env_args",
    )
}

__all__ = sorted([*_LAZY, "ROBOMIMIC_ENV_IDS"])


def __getattr__(name: str) -> Any:
    # Lazy so that `import sb3_expo.envs` (registration) does not import torch/SB3 through sb3_expo.wrappers.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
