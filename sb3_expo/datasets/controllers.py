"""Scripted controllers for cheap gymnasium tasks, used to write small demo datasets (``make_minari``).

Each controller maps one observation to one action in the env's action units. :class:`NoisyController` adds the
"quality" knob: Gaussian noise (in the [-1, 1] scaled action units) and, with probability ``random_prob``, a
uniformly random action instead of the controller's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Callable, Union

import numpy as np
from gymnasium import spaces

#: observation (an array, or a dict of arrays for Dict-observation envs such as PointMaze) -> action
Controller = Callable[[Any], np.ndarray]

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


# gymnasium-robotics' U-maze (maps.U_MAZE) with a fixed start "r" (top-left) and goal "g" (bottom-left), the two ends of
# the U: the layout of D4RL's antmaze-umaze, whose local analogue this is.
POINTMAZE_UMAZE: list[list[Union[int, str]]] = [
    [1, 1, 1, 1, 1],
    [1, "r", 0, 0, 1],
    [1, 1, 1, 0, 1],
    [1, "g", 0, 0, 1],
    [1, 1, 1, 1, 1],
]


def _maze_path(maze_map: Sequence[Sequence[Union[int, str]]], start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    """Shortest path of free cells from ``start`` to ``goal`` (breadth-first, 4-neighbour moves), both included."""
    previous: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        i, j = cell
        for nxt in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if nxt not in previous and 0 <= nxt[0] < len(maze_map) and 0 <= nxt[1] < len(maze_map[0]) and maze_map[nxt[0]][nxt[1]] != 1:
                previous[nxt] = cell
                queue.append(nxt)
    if goal not in previous:
        return [start]  # unreachable (or the position left the free cells): head for the goal directly
    path, node = [], goal
    while node is not None:
        path.append(node)
        node = previous[node]
    return path[::-1]


def pointmaze_waypoints(
    obs: dict[str, np.ndarray],
    maze_map: Sequence[Sequence[Union[int, str]]] = POINTMAZE_UMAZE,
    scaling: float = 1.0,
    kp: float = 10.0,
    kd: float = 1.0,
) -> np.ndarray:
    """
    Waypoint controller for gymnasium-robotics ``PointMaze`` (obs ``{"observation": [x, y, vx, vy],
    "desired_goal": [gx, gy], ...}``, action: force in ``[-1, 1]^2``): a breadth-first path through the maze's
    cells from the ball's cell to the goal's, then a PD law toward the next cell's centre (the goal itself once in
    the goal's cell). Moving between adjacent cells stays inside their union, so it never aims through a wall.
    Noise-free it reaches the goal of ``PointMaze_UMaze-v3`` (start and goal at the two ends of the U) in about
    110-130 of the 300 steps (random start and goal cells, the registered default, work as well).

    :param obs: the Dict observation
    :param maze_map: the env's maze map (1 = wall); any map with free cells works (the env's own goal cells)
    :param scaling: the env's ``maze_size_scaling`` (PointMaze: 1)
    :param kp: proportional gain on the position error
    :param kd: derivative gain on the velocity
    :return: force, shape ``(2,)``
    """
    x, y, vx, vy = (float(v) for v in obs["observation"][:4])
    goal = np.asarray(obs["desired_goal"], dtype=np.float64)
    n_rows, n_cols = len(maze_map), len(maze_map[0])

    def cell(px: float, py: float) -> tuple[int, int]:  # Maze.cell_xy_to_rowcol
        i = int(np.floor((n_rows / 2 * scaling - py) / scaling))
        j = int(np.floor((px + n_cols / 2 * scaling) / scaling))
        return min(max(i, 0), n_rows - 1), min(max(j, 0), n_cols - 1)

    path = _maze_path(maze_map, cell(x, y), cell(float(goal[0]), float(goal[1])))
    if len(path) > 1:
        i, j = path[1]  # centre of the next cell (Maze.cell_rowcol_to_xy)
        target = np.array([(j + 0.5) * scaling - n_cols / 2 * scaling, n_rows / 2 * scaling - (i + 0.5) * scaling])
    else:
        target = goal
    force = kp * (target - np.array([x, y])) - kd * np.array([vx, vy])
    return np.clip(force, -1.0, 1.0).astype(np.float32)


CONTROLLERS: dict[str, Controller] = {
    "Pendulum-v1": pendulum_swingup,
    "MountainCarContinuous-v0": mountain_car_bang_bang,
    "PointMaze_UMaze-v3": pointmaze_waypoints,
}

# gym.make kwargs of the demo env, for the envs whose demo task is not the registered default: make_minari writes the
# dataset on this env, and the env's zoo_configs entries pass the same env_kwargs (tests/test_dataset_names.py).
# PointMaze: the sparse reward (the registered default), the episode ends at the goal, fixed start and goal.
DEMO_ENV_KWARGS: dict[str, dict[str, Any]] = {
    "PointMaze_UMaze-v3": {"continuing_task": False, "maze_map": POINTMAZE_UMAZE},
}

# The demo dataset of each env with a controller: (short name, quality, episodes). Its id is
# ``sb3-expo/<short name>-<quality>-v0`` (``make_minari.default_dataset_id``), the id zoo_configs/*.yml and the main
# job read, so the command line and the launcher write and reuse one copy.
DEMO_DATASETS: dict[str, tuple[str, str, int]] = {
    "Pendulum-v1": ("pendulum", "medium", 20),
    "MountainCarContinuous-v0": ("mountaincar", "expert", 10),
    "PointMaze_UMaze-v3": ("pointmaze-umaze", "expert", 10),
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
