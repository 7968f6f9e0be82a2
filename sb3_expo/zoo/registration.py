"""EXPO in RL Zoo's tables: ``ALGOS["expo"]``, its Optuna sampler and converter, and the optional env packages."""

from __future__ import annotations

import contextlib
import importlib
import io
import sys

import gymnasium as gym

from sb3_expo.expo import EXPO
from sb3_expo.zoo.tuning import convert_expo_params, sample_expo_params

def register_envs() -> list[str]:
    """Import the optional env packages so that their ids are registered (each is skipped if not installed).

    :return: the packages that were imported
    """
    imported = []
    try:
        # gymnasium-robotics prints a notice about the Adroit *Dense-v1 rewards on import (farama_notifications);
        # it concerns the dense variants' reproducibility across versions, not this package: keep the output clean.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        imported.append("gymnasium_robotics")
    except ImportError:
        pass
    try:
        importlib.import_module("sb3_expo.envs")  # robomimic tasks: sb3_expo/RobomimicLift-v0, ... (lazy robosuite)
        imported.append("sb3_expo.envs")
    except ImportError:
        pass
    return imported


def register() -> None:
    """Register EXPO with RL Zoo (idempotent): ``ALGOS["expo"]``, its Optuna sampler and converter, and the envs."""
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    ALGOS["expo"] = EXPO
    ALGOS["rlpd"] = importlib.import_module("sb3_expo.rlpd").RLPD  # the RLPD baseline (docs/rlpd.md)
    HYPERPARAMS_SAMPLER["expo"] = sample_expo_params
    HYPERPARAMS_CONVERTER["expo"] = convert_expo_params
    register_envs()


def register_with_rl_zoo() -> None:
    """What the import hook runs once ``rl_zoo3.exp_manager`` is imported (``python -m rl_zoo3.train``/``enjoy``).

    :func:`register`, then the zoo's ``ExperimentManager`` becomes :class:`~sb3_expo.zoo.experiment_manager.
    RLZooExperimentManager`: EXPO's YAML keys and checks for ``--algo expo``, the zoo's own behaviour for every
    other algorithm.
    """
    import rl_zoo3.exp_manager as zoo_exp_manager

    register()
    ours = sys.modules.get("sb3_expo.zoo.experiment_manager")
    if ours is not None and not hasattr(ours, "RLZooExperimentManager"):
        # that module's own import of rl_zoo3 brought us here: it swaps its class in once it is defined
        ours.SWAP_INTO_RL_ZOO = True
        return
    from sb3_expo.zoo.experiment_manager import RLZooExperimentManager

    zoo_exp_manager.ExperimentManager = RLZooExperimentManager
