"""The transformations shared by the loaders, the replay buffers and the env wrappers, so they always agree:
observation flattening (Dict -> one vector, keys in the order given), action rescaling to ``[-1, 1]`` (SB3's formula)
and the reward shift/scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from gymnasium import spaces

from sb3_expo.data.dataset import OfflineDataError


def flatten_dict_obs(
    obs: Mapping[str, np.ndarray], keys: Sequence[str], space: spaces.Dict | None = None
) -> np.ndarray:
    """
    Concatenate the entries ``keys`` of a dict observation, IN THE ORDER GIVEN, along the feature axis.

    Works for one observation (``obs[k].shape == space[k].shape``) and for a batch (``(N, *space[k].shape)``).
    Each entry is flattened to 1-D features first. Without ``space`` every entry is assumed to hold 1-D
    features (its last axis), which is the case of robomimic low-dim keys and of goal-conditioned gymnasium envs.

    :param obs: dict of arrays
    :param keys: the keys to keep, in the order they are concatenated
    :param space: the Dict space ``obs`` belongs to (needed only for multi-dimensional entries)
    :return: float array ``(..., sum of feature sizes)``
    """
    if len(keys) == 0:
        raise OfflineDataError("flatten_dict_obs needs at least one key. Fix: pass obs_keys=[...] (non-empty).")
    missing = [key for key in keys if key not in obs]
    if missing:
        raise OfflineDataError(
            f"Observation keys {missing} are not in the observation (available: {sorted(obs.keys())}). "
            "Fix: choose obs_keys among the available keys."
        )
    parts = []
    for key in keys:
        arr = np.asarray(obs[key])
        if space is not None:
            feat_ndim = len(space[key].shape)
            lead = arr.shape[: arr.ndim - feat_ndim]
            parts.append(arr.reshape(*lead, -1))
        else:
            parts.append(np.atleast_1d(arr))
    return np.concatenate(parts, axis=-1)


def concat_robomimic_obs(obs_dict: Mapping[str, np.ndarray], obs_keys: Sequence[str]) -> np.ndarray:
    """
    Concatenate robomimic low-dim observation keys into one float32 vector, IN THE ORDER OF ``obs_keys``.

    Used both by :func:`load_robomimic_dataset` (on ``(N, d_k)`` arrays) and by env wrappers (on one observation
    dict with ``(d_k,)`` entries), so that the env and the dataset build the same vector.

    :param obs_dict: dict ``key -> array`` with the feature dimension last
    :param obs_keys: keys to concatenate, in this order (e.g. ``["object", "robot0_eef_pos", ...]``)
    :return: float32 array ``(..., sum_k d_k)``
    """
    return flatten_dict_obs(obs_dict, list(obs_keys)).astype(np.float32, copy=False)


def flatten_dict_space(space: spaces.Dict, keys: Sequence[str]) -> spaces.Box:
    """
    The Box space of :func:`flatten_dict_obs` applied to observations of ``space``.

    :param space: a Dict space whose entries ``keys`` are Box spaces
    :param keys: keys to keep, in the order they are concatenated
    :return: the flattened Box space (bounds concatenated in the same order)
    """
    missing = [key for key in keys if key not in space.spaces]
    if missing:
        raise OfflineDataError(
            f"Observation keys {missing} are not in the Dict observation space (available: {list(space.spaces)}). "
            "Fix: choose obs_keys among the available keys."
        )
    for key in keys:
        if not isinstance(space[key], spaces.Box):
            raise OfflineDataError(
                f"Observation key {key!r} is a {type(space[key]).__name__}, only Box entries can be flattened. "
                "Fix: leave this key out of obs_keys."
            )
    low = np.concatenate([np.asarray(space[key].low).reshape(-1) for key in keys])
    high = np.concatenate([np.asarray(space[key].high).reshape(-1) for key in keys])
    dtype = np.result_type(*[space[key].dtype for key in keys])
    return spaces.Box(low=low.astype(dtype), high=high.astype(dtype), dtype=dtype)  # type: ignore[arg-type]


def scale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """
    Rescale an action from ``[low, high]`` to ``[-1, 1]`` with the same formula as SB3's ``policy.scale_action``.

    :param action: action(s), last axis = action dims
    :param low: lower bounds of the action space
    :param high: upper bounds of the action space
    :return: the rescaled action(s)
    """
    return 2.0 * ((action - low) / (high - low)) - 1.0


def unscale_action(scaled_action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """
    Inverse of :func:`scale_action` (same formula as SB3's ``policy.unscale_action``).

    :param scaled_action: action(s) in ``[-1, 1]``
    :param low: lower bounds of the action space
    :param high: upper bounds of the action space
    :return: the action(s) in ``[low, high]``
    """
    return low + (0.5 * (scaled_action + 1.0) * (high - low))


def transform_reward(reward: np.ndarray | float, shift: float = 0.0, scale: float = 1.0) -> np.ndarray | float:
    """
    ``reward * scale + shift``: the one reward transform shared by :class:`~sb3_expo.wrappers.ShiftScaleReward`
    (online rewards) and the offline replay buffers (``reward_shift``/``reward_scale``), so they agree.
    The paper's Antmaze setting is ``shift=-1, scale=1``.

    :param reward: reward(s)
    :param shift: added after scaling
    :param scale: multiplies the reward first
    :return: the transformed reward(s)
    """
    if scale == 1.0 and shift == 0.0:
        return reward
    return reward * scale + shift
