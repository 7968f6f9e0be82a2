"""Checks of offline data against an env's spaces (Box actions with finite bounds, observation shapes and Dict keys,
action bounds, NaN/inf), and the bounds check + rescale of raw actions the loaders apply. Every error names the
problem and the fix.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_expo.data.dataset import OfflineDataError, OfflineDataset, OutOfBounds, _fmt, _items
from sb3_expo.data.transforms import scale_action

# Actions within this fraction of the action range outside the bounds are float round-off: clipped silently.
_ACTION_TOL = 1e-5


def _check_action_space(action_space: spaces.Space) -> spaces.Box:
    if not isinstance(action_space, spaces.Box):
        raise OfflineDataError(
            f"Offline datasets need a continuous (Box) action space, got {action_space}. "
            "Fix: use a continuous-action env (SAC/TD3/TQC/EXPO only support Box actions)."
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise OfflineDataError(
            f"The action space {action_space} has infinite bounds, so actions cannot be rescaled to [-1, 1]. "
            "Fix: wrap the env with gymnasium.wrappers.RescaleAction / ClipAction to finite bounds."
        )
    return action_space


def check_observation_space(
    data_space: spaces.Space, env_space: spaces.Space, *, what: str = "the dataset", obs_keys: Sequence[str] | None = None
) -> None:
    """
    Check that the dataset observation space (after any flattening) matches the env's.

    :param data_space: observation space of the data (after flattening with ``obs_keys`` if any)
    :param env_space: observation space of the env / replay buffer
    :param what: name of the data in messages
    :param obs_keys: the keys used for flattening, if any (for messages)
    :raises OfflineDataError: on a mismatch; the message says how to fix it
    """
    if isinstance(env_space, spaces.Dict) and isinstance(data_space, spaces.Dict):
        env_keys, data_keys = set(env_space.spaces), set(data_space.spaces)
        if env_keys != data_keys:
            raise OfflineDataError(
                f"Observation keys differ: {what} has {sorted(data_keys)}, the env has {sorted(env_keys)} "
                f"(missing in data: {sorted(env_keys - data_keys)}, extra in data: {sorted(data_keys - env_keys)}). "
                "Fix: make the env return the same Dict keys as the dataset (e.g. gymnasium.wrappers."
                "FilterObservation), or flatten both with obs_keys=[...] and FlattenDictObservation(env, keys=[...])."
            )
        for key in env_space.spaces:
            if tuple(env_space[key].shape) != tuple(data_space[key].shape):
                raise OfflineDataError(
                    f"Observation shape mismatch for key {key!r}: {what} has {data_space[key].shape}, the env has "
                    f"{env_space[key].shape}. Fix: use the env version the dataset was recorded with "
                    "(minari: dataset.recover_environment())."
                )
        return
    if isinstance(data_space, spaces.Dict) and not isinstance(env_space, spaces.Dict):
        raise OfflineDataError(
            f"{what} has Dict observations with keys {list(data_space.spaces)} but the env observation space is "
            f"{env_space}. Fix: pass obs_keys=[...] to flatten the dataset AND wrap the env with "
            "sb3_expo.wrappers.FlattenDictObservation(env, keys=[...]) (same keys, same order), or keep the env's "
            "Dict observations and use 'MultiInputPolicy'."
        )
    if isinstance(env_space, spaces.Dict) and not isinstance(data_space, spaces.Dict):
        raise OfflineDataError(
            f"The env has Dict observations {list(env_space.spaces)} but {what} has flat observations "
            f"{data_space}. Fix: wrap the env with sb3_expo.wrappers.FlattenDictObservation(env, keys=[...]) "
            "using the keys (and order) the dataset was flattened with."
        )
    if tuple(getattr(data_space, "shape", ())) != tuple(getattr(env_space, "shape", ())):
        hint = f" (the dataset concatenates obs_keys={list(obs_keys)} in this order)" if obs_keys else ""
        raise OfflineDataError(
            f"Observation shape mismatch: {what} has {data_space.shape}{hint}, the env has {env_space.shape}. "
            "Fix: use the env the dataset was recorded with, or choose obs_keys / the env wrapper so both build "
            "the same vector."
        )


def check_action_space(data_space: spaces.Space, env_space: spaces.Space, *, what: str = "the dataset") -> None:
    """
    Check that the dataset action space has the env's shape and bounds (actions are rescaled with the env bounds).

    :param data_space: action space recorded with the dataset
    :param env_space: action space of the env / replay buffer
    :param what: name of the data in messages
    :raises OfflineDataError: on a mismatch; the message says how to fix it
    """
    env_box = _check_action_space(env_space)
    data_box = _check_action_space(data_space)
    if data_box.shape != env_box.shape:
        raise OfflineDataError(
            f"Action shape mismatch: {what} has {data_box.shape}, the env has {env_box.shape}. "
            "Fix: use the env (and version) the dataset was recorded with."
        )
    if not (np.allclose(data_box.low, env_box.low) and np.allclose(data_box.high, env_box.high)):
        raise OfflineDataError(
            f"Action bounds mismatch: {what} was recorded with low={_fmt(data_box.low)}, high={_fmt(data_box.high)} but the env "
            f"has low={_fmt(env_box.low)}, high={_fmt(env_box.high)}, so its actions would be rescaled wrongly. Fix: wrap the env "
            "with gymnasium.wrappers.RescaleAction(env, min_action=<dataset low>, max_action=<dataset high>) "
            "so both use the same bounds, or use the env the dataset was recorded with."
        )


def _first_non_finite(arr: np.ndarray) -> int | None:
    if not np.issubdtype(arr.dtype, np.floating):
        return None
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    idx = np.flatnonzero(bad)
    return int(idx[0]) if len(idx) else None


def check_finite(dataset: OfflineDataset, what: str = "the dataset") -> None:
    """
    Raise if any float field holds NaN or inf, naming the field and the first bad row.

    :param dataset: the dataset to check
    :param what: name of the data in messages
    :raises OfflineDataError: on NaN/inf
    """
    fields = [
        *[(f"observations{k}", a) for k, a in _items(dataset.observations)],
        *[(f"next_observations{k}", a) for k, a in _items(dataset.next_observations)],
        ("actions", dataset.actions),
        ("rewards", dataset.rewards),
    ]
    for name, arr in fields:
        row = _first_non_finite(arr)
        if row is not None:
            n_bad = int((~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)).sum())
            raise OfflineDataError(
                f"{what}: field '{name}' contains NaN/inf in {n_bad} row(s), first at {dataset.locate(row)}: "
                f"{_fmt(arr[row])}. Fix: remove or repair those transitions before loading (for minari, build a clean "
                "dataset with dataset.filter_episodes(...) and minari's DataCollector / create_dataset_from_buffers)."
            )


def _handle_out_of_bounds(
    actions: np.ndarray, low: np.ndarray, high: np.ndarray, out_of_bounds: OutOfBounds, locate: Any, what: str
) -> np.ndarray:
    """Clip float round-off silently; real violations raise (``"error"``) or are clipped with a warning."""
    if out_of_bounds not in ("error", "clip"):
        raise OfflineDataError(f"out_of_bounds must be 'error' or 'clip', got {out_of_bounds!r}.")
    tol = _ACTION_TOL * (high - low)
    bad_rows = np.flatnonzero(((actions < low - tol) | (actions > high + tol)).any(axis=1))
    if len(bad_rows) and out_of_bounds == "error":
        row = int(bad_rows[0])
        raise OfflineDataError(
            f"{what}: {len(bad_rows)} of {len(actions)} actions lie outside the action space bounds "
            f"low={_fmt(low)}, high={_fmt(high)}; first at {locate(row)}: {_fmt(actions[row])}. Fix: pass out_of_bounds='clip' "
            "(e.g. replay_buffer_kwargs=dict(..., out_of_bounds='clip')) to clip them into the bounds, or check that "
            "the dataset was recorded with this env's action space."
        )
    if len(bad_rows):
        warnings.warn(
            f"{what}: clipped {len(bad_rows)} of {len(actions)} actions that lay outside the action space bounds "
            f"low={_fmt(low)}, high={_fmt(high)}.",
            stacklevel=3,
        )
    return np.clip(actions, low, high)


def _scale_actions(
    raw_actions: np.ndarray, action_space: spaces.Box, out_of_bounds: OutOfBounds, locate: Any, what: str
) -> np.ndarray:
    """Bounds check + rescale to [-1, 1] in the action space dtype, like SB3's ``policy.scale_action``."""
    dtype = np.float32 if action_space.dtype == np.float64 else action_space.dtype
    low, high = action_space.low, action_space.high
    raw = raw_actions.reshape(len(raw_actions), -1)
    clipped = _handle_out_of_bounds(raw, low.reshape(-1), high.reshape(-1), out_of_bounds, locate, what)
    scaled = scale_action(clipped.astype(action_space.dtype, copy=False), low.reshape(-1), high.reshape(-1))
    return np.clip(scaled, -1.0, 1.0).astype(dtype, copy=False)


def validate_offline_dataset(
    dataset: OfflineDataset,
    observation_space: spaces.Space | None = None,
    action_space: spaces.Space | None = None,
    *,
    what: str | None = None,
    check_values: bool = True,
) -> None:
    """
    Full check of a dataset against the spaces of an env / replay buffer: not empty, array shapes match the spaces,
    no NaN/inf, actions within ``[-1, 1]``.

    :param dataset: the dataset (actions already rescaled to ``[-1, 1]``)
    :param observation_space: the env observation space (skipped if None)
    :param action_space: the env action space (skipped if None)
    :param what: name of the data in messages (default: from ``dataset.source``)
    :param check_values: also scan the values (NaN/inf, action range); the loaders, which have just done it,
        skip this second pass over the data
    :raises OfflineDataError: naming the problem and the fix
    """
    what = what or _describe(dataset.source)
    if len(dataset) == 0:
        raise OfflineDataError(
            f"{what} is empty (0 transitions). Fix: record at least one episode (e.g. "
            "python -m sb3_expo.datasets.make_minari ...), check filter_key / episode filters, or drop the offline "
            "replay buffer and use SB3's plain ReplayBuffer."
        )
    n = len(dataset)
    if observation_space is not None:
        if isinstance(observation_space, spaces.Dict):
            if not isinstance(dataset.observations, Mapping):
                raise OfflineDataError(
                    f"The env has Dict observations {list(observation_space.spaces)} but {what} has flat "
                    "observations. Fix: wrap the env with sb3_expo.wrappers.FlattenDictObservation(env, keys=[...]) "
                    "using the keys the dataset was flattened with."
                )
            data_keys, env_keys = set(dataset.observations), set(observation_space.spaces)
            if data_keys != env_keys:
                raise OfflineDataError(
                    f"Observation keys differ: {what} has {sorted(data_keys)}, the env has {sorted(env_keys)}. "
                    "Fix: make the env return the dataset's keys (gymnasium.wrappers.FilterObservation) or flatten "
                    "both with obs_keys=[...] and FlattenDictObservation."
                )
            for key, sub in observation_space.spaces.items():
                for name in ("observations", "next_observations"):
                    arr = getattr(dataset, name)[key]
                    if tuple(arr.shape) != (n, *sub.shape):
                        raise OfflineDataError(
                            f"{what}: '{name}[{key!r}]' has shape {arr.shape}, expected {(n, *sub.shape)} for the env "
                            f"space {sub}. Fix: use the env the dataset was recorded with."
                        )
        else:
            if isinstance(dataset.observations, Mapping):
                raise OfflineDataError(
                    f"{what} has Dict observations {list(dataset.observations)} but the env observation space is "
                    f"{observation_space}. Fix: flatten the dataset with obs_keys=[...] and wrap the env with "
                    "sb3_expo.wrappers.FlattenDictObservation(env, keys=[...]), or use 'MultiInputPolicy'."
                )
            for name in ("observations", "next_observations"):
                arr = getattr(dataset, name)
                if tuple(arr.shape) != (n, *observation_space.shape):
                    raise OfflineDataError(
                        f"Observation shape mismatch: {what} '{name}' rows have shape {arr.shape[1:]}, the env has "
                        f"{observation_space.shape}. Fix: use the env the dataset was recorded with, or choose "
                        "obs_keys / the env wrapper so both build the same vector."
                    )
    if action_space is not None:
        box = _check_action_space(action_space)
        action_dim = int(np.prod(box.shape))
        if dataset.actions.ndim != 2 or dataset.actions.shape[1] != action_dim:
            raise OfflineDataError(
                f"Action shape mismatch: {what} actions have shape {dataset.actions.shape}, expected (N, {action_dim}) "
                f"for the env action space {action_space}. Fix: use the env the dataset was recorded with."
            )
    if not check_values:
        return
    check_finite(dataset, what)
    bad_rows = np.flatnonzero((np.abs(dataset.actions.reshape(n, -1)) > 1.0 + 1e-6).any(axis=1))
    if len(bad_rows):
        raise OfflineDataError(
            f"{what}: {len(bad_rows)} actions lie outside [-1, 1], first at {dataset.locate(int(bad_rows[0]))}: "
            f"{_fmt(dataset.actions[bad_rows[0]])}. OfflineDataset actions must be rescaled to [-1, 1] (SB3's "
            "policy.scale_action). Fix: load through load_minari_dataset / load_robomimic_dataset, or apply "
            "sb3_expo.wrappers.scale_action(actions, low, high) (and clip) yourself."
        )


def _describe(source: Mapping[str, Any]) -> str:
    kind = source.get("kind")
    if kind == "minari":
        return f"Minari dataset {source.get('dataset_id')!r}"
    if kind == "robomimic":
        return f"robomimic dataset {source.get('path')!r}"
    return "the offline dataset"
