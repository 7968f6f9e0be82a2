"""Gymnasium wrappers that make an env agree with an offline dataset (observation layout, reward, action range).

Each wrapper uses the same function as the dataset side (:func:`flatten_dict_obs`, :func:`transform_reward`),
so the online transitions and the offline ones are built identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_expo.data.transforms import flatten_dict_obs, flatten_dict_space, transform_reward


class FlattenDictObservation(gym.ObservationWrapper):
    """
    Flatten a Dict observation into one vector by concatenating ``keys`` IN THE ORDER GIVEN, exactly as
    ``load_minari_dataset(..., obs_keys=keys)`` / ``MinariReplayBuffer(obs_keys=keys)`` flatten the dataset
    (one shared function, :func:`~sb3_expo.wrappers.flatten_dict_obs`). Unlike gymnasium's ``FlattenObservation``
    the key order is yours, not alphabetical, and unused keys can be dropped.

    :param env: env with a Dict observation space of Box entries
    :param keys: the keys to keep, in concatenation order (default: all keys, in the space's order)
    """

    def __init__(self, env: gym.Env, keys: Sequence[str] | None = None):
        super().__init__(env)
        if not isinstance(env.observation_space, spaces.Dict):
            raise TypeError(
                f"FlattenDictObservation needs a Dict observation space, got {env.observation_space}. "
                "Fix: drop this wrapper (the observations are already flat)."
            )
        self._dict_space = env.observation_space
        self.keys = list(keys) if keys is not None else list(env.observation_space.spaces)
        self.observation_space = flatten_dict_space(env.observation_space, self.keys)

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        """
        :param observation: the env's Dict observation
        :return: the flat observation
        """
        return flatten_dict_obs(observation, self.keys, self._dict_space).astype(self.observation_space.dtype, copy=False)


class ShiftScaleReward(gym.RewardWrapper):
    """
    ``reward * scale + shift`` (e.g. ``shift=-1`` turns a 0/1 sparse reward into -1/0, as the paper does on
    Antmaze). Use the same values as ``reward_shift`` / ``reward_scale`` of the offline replay buffer so that
    online and offline rewards agree (both call :func:`~sb3_expo.wrappers.transform_reward`).

    :param env: the env
    :param shift: added after scaling
    :param scale: multiplies the reward first
    """

    def __init__(self, env: gym.Env, shift: float = -1.0, scale: float = 1.0):
        super().__init__(env)
        self.shift = float(shift)
        self.scale = float(scale)

    def reward(self, reward: float) -> float:  # type: ignore[override]
        """
        :param reward: the env's reward
        :return: the transformed reward
        """
        return float(transform_reward(reward, self.shift, self.scale))


class ClipActionToSpace(gym.ActionWrapper):
    """
    Clip actions into the action space bounds at ``step`` WITHOUT changing the action space.

    gymnasium's ``ClipAction`` widens the space to ``(-inf, inf)``, which breaks SB3's action rescaling; this one
    keeps the finite bounds. EXPO's edited actions ``a + beta * tanh(u)`` can leave the bounds and the authors'
    implementation clips them in the env, which is what this wrapper does.

    :param env: env with a Box action space
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if not isinstance(env.action_space, spaces.Box):
            raise TypeError(f"ClipActionToSpace needs a Box action space, got {env.action_space}.")

    def action(self, action: np.ndarray) -> np.ndarray:
        """
        :param action: action, possibly out of bounds
        :return: the action clipped into ``[low, high]``
        """
        space = self.action_space
        assert isinstance(space, spaces.Box)
        return np.clip(action, space.low, space.high).astype(space.dtype, copy=False)
