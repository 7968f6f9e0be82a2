"""Scripted controllers for cheap gymnasium tasks, used to write small demo datasets (``make_minari``).

Each controller maps one observation to one action in the env's action units. :class:`NoisyController` adds the
"quality" knob: Gaussian noise (in the [-1, 1] scaled action units) and, with probability ``random_prob``, a
uniformly random action instead of the controller's.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from gymnasium import spaces

Controller = Callable[[np.ndarray], np.ndarray]

# gymnasium Pendulum-v1 constants: theta'' = (3 g / 2 l) sin(theta) + 3 / (m l^2) u, g = 10, m = l = 1.
_PENDULUM_A = 15.0  # 3 g / (2 l)


def pendulum_swingup(
    obs: np.ndarray,
    energy_gain: float = 0.5,
    kp: float = 10.0,
    kd: float = 2.0,
    balance_cos: float = 0.8,
    max_torque: float = 2.0,
) -> np.ndarray:
    """
    Energy-based swing-up plus PD balance for ``Pendulum-v1`` (obs ``[cos th, sin th, th_dot]``, th = 0 upright).

    With ``E = th_dot^2 / 2 + a cos th`` (``a = 3g/2l``), ``dE/dt = 3 u th_dot``: pushing along ``th_dot`` in
    proportion to the energy gap ``a - E`` pumps the pendulum up to the upright energy; once near the top
    (``cos th > balance_cos``) a PD law balances it. Noise-free it scores about -145 per episode (random: -1200).

    :param obs: observation ``[cos th, sin th, th_dot]``
    :param energy_gain: swing-up gain on the energy gap
    :param kp: balance proportional gain
    :param kd: balance derivative gain
    :param balance_cos: switch to balance when ``cos th`` exceeds this
    :param max_torque: torque limit
    :return: torque, shape ``(1,)``
    """
    cos_th, sin_th, th_dot = float(obs[0]), float(obs[1]), float(obs[2])
    theta = np.arctan2(sin_th, cos_th)
    if cos_th > balance_cos:
        torque = -(kp * theta + kd * th_dot)
    else:
        energy = 0.5 * th_dot**2 + _PENDULUM_A * cos_th
        direction = np.sign(th_dot) if th_dot != 0.0 else 1.0
        torque = energy_gain * (_PENDULUM_A - energy) * direction
    return np.array([np.clip(torque, -max_torque, max_torque)], dtype=np.float32)


def mountain_car_bang_bang(obs: np.ndarray) -> np.ndarray:
    """
    Bang-bang energy pumping for ``MountainCarContinuous-v0`` (obs ``[position, velocity]``): full force in the
    direction of the velocity. Reaches the flag in about 100 steps (return about 90); a sparse-reward task where a
    few demos matter, since random exploration rarely reaches the goal.

    :param obs: observation ``[position, velocity]``
    :return: force, shape ``(1,)``
    """
    return np.array([1.0 if float(obs[1]) >= 0.0 else -1.0], dtype=np.float32)


CONTROLLERS: dict[str, Controller] = {
    "Pendulum-v1": pendulum_swingup,
    "MountainCarContinuous-v0": mountain_car_bang_bang,
}

# The demo dataset of each env with a controller: (short name, quality, episodes). Its id is
# ``sb3-expo/<short name>-<quality>-v0`` (``make_minari.default_dataset_id``), the id zoo_configs/*.yml and the main
# job read, so the command line and the launcher write and reuse one copy.
DEMO_DATASETS: dict[str, tuple[str, str, int]] = {
    "Pendulum-v1": ("pendulum", "medium", 20),
    "MountainCarContinuous-v0": ("mountaincar", "expert", 10),
}

# (gaussian noise std in scaled [-1, 1] units, probability of a uniformly random action)
QUALITY_PRESETS: dict[str, tuple[float, float]] = {
    "expert": (0.05, 0.0),
    "medium": (0.3, 0.5),  # Pendulum: about -630 per episode, between random (-1200) and expert (-145)
    "random": (0.0, 1.0),
}


class NoisyController:
    """
    Wrap a controller with Gaussian noise and random actions, in the scaled ``[-1, 1]`` action units, then clip to
    the action space.

    :param controller: observation -> action (env units)
    :param action_space: the env's Box action space
    :param noise: std of the Gaussian noise added to the scaled action
    :param random_prob: probability of replacing the action by a uniform random one
    :param seed: seed of the noise generator
    """

    def __init__(
        self,
        controller: Controller,
        action_space: spaces.Box,
        noise: float = 0.0,
        random_prob: float = 0.0,
        seed: int | None = None,
    ):
        self.controller = controller
        self.action_space = action_space
        self.noise = float(noise)
        self.random_prob = float(random_prob)
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """
        :param obs: one observation
        :return: one action in the env's units and dtype
        """
        low, high = self.action_space.low, self.action_space.high
        if self.random_prob > 0.0 and self.rng.random() < self.random_prob:
            scaled = self.rng.uniform(-1.0, 1.0, size=low.shape)
        else:
            action = np.asarray(self.controller(obs), dtype=np.float64).reshape(low.shape)
            scaled = 2.0 * (action - low) / (high - low) - 1.0
            if self.noise > 0.0:
                scaled = scaled + self.noise * self.rng.standard_normal(low.shape)
        scaled = np.clip(scaled, -1.0, 1.0)
        return (low + 0.5 * (scaled + 1.0) * (high - low)).astype(self.action_space.dtype)
