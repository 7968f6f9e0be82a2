"""Offline datasets (Minari, robomimic HDF5) as plain numpy arrays, validated against an env's spaces.

Everything here is vectorised: each episode is read as whole arrays and the episodes are joined with one
``np.concatenate`` per field, so a 1M-transition dataset loads in seconds (no per-transition Python loop).

Conventions (shared with :mod:`sb3_expo.wrappers.replay_buffers` and :mod:`sb3_expo.wrappers.env_wrappers`):

* actions are stored rescaled to ``[-1, 1]`` with exactly the formula of SB3's ``policy.scale_action``
  (``2 * ((a - low) / (high - low)) - 1``), because SB3's off-policy algorithms with squashed policies store
  scaled actions in their replay buffer;
* ``terminations`` and ``truncations`` are kept apart: a time-limit truncation is not a terminal for the TD target;
* Dict observations are either kept as a dict of arrays (for ``MultiInputPolicy``) or flattened with
  :func:`flatten_dict_obs`, the single function the env wrapper
  :class:`~sb3_expo.wrappers.env_wrappers.FlattenDictObservation` uses too, so that env and dataset agree.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
from gymnasium import spaces

ObsArray = Union[np.ndarray, dict[str, np.ndarray]]
OutOfBounds = Literal["error", "clip"]
DoneMode = Literal["dones", "rewards", "none"]

# Actions within this fraction of the action range outside the bounds are float round-off: clipped silently.
_ACTION_TOL = 1e-5


class OfflineDataError(ValueError):
    """An offline dataset cannot be used as it is; the message names the problem and the fix."""


class OfflineDatasetNotFoundError(FileNotFoundError):
    """An offline dataset is not available locally (and was not, or could not be, downloaded)."""


@dataclass
class OfflineDataset:
    """
    A flat table of transitions, row ``i`` being ``(observations[i], actions[i], rewards[i], next_observations[i],
    terminations[i], truncations[i])``.

    :param observations: ``(N, *obs_shape)`` array, or a dict of such arrays for Dict observation spaces
    :param next_observations: same layout as ``observations``; the observation reached after ``actions[i]``
        (the true final observation also for truncated and terminal rows)
    :param actions: ``(N, action_dim)`` float32 actions, already rescaled to ``[-1, 1]``
    :param rewards: ``(N,)`` float32 rewards, as recorded (no shift/scale applied)
    :param terminations: ``(N,)`` bool, True where the episode ended in a terminal state (no bootstrap)
    :param truncations: ``(N,)`` bool, True where the episode was cut (time limit, end of demo): bootstrap
    :param source: where the data came from, e.g. ``{"kind": "minari", "dataset_id": ...}`` or
        ``{"kind": "robomimic", "path": ..., "obs_keys": [...]}``
    :param episode_starts: optional ``(n_episodes,)`` row index at which each episode starts (for messages/tests)
    """

    observations: ObsArray
    next_observations: ObsArray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)
    episode_starts: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Cheap structural check only (lengths); value checks live in validate_offline_dataset.
        n = len(self.actions)
        for name in ("rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != n:
                raise OfflineDataError(
                    f"OfflineDataset field '{name}' has {len(getattr(self, name))} rows but 'actions' has {n}. "
                    "Fix: build every field from the same list of transitions."
                )
        for name in ("observations", "next_observations"):
            for key, arr in _items(getattr(self, name)):
                if len(arr) != n:
                    raise OfflineDataError(
                        f"OfflineDataset field '{name}{key}' has {len(arr)} rows but 'actions' has {n}. "
                        "Fix: build every field from the same list of transitions."
                    )

    def __len__(self) -> int:
        return len(self.actions)

    def locate(self, row: int) -> str:
        """
        :param row: a row index
        :return: a human-readable location, e.g. ``"row 1234 (episode 5, step 34)"``
        """
        if self.episode_starts is None or len(self.episode_starts) == 0:
            return f"row {row}"
        episode = int(np.searchsorted(self.episode_starts, row, side="right") - 1)
        names = self.source.get("episode_names")
        ep_name = names[episode] if names is not None else f"episode {episode}"
        return f"row {row} ({ep_name}, step {row - int(self.episode_starts[episode])})"


def _fmt(x: Any) -> str:
    """One-line array text for error messages."""
    return np.array2string(np.asarray(x), max_line_width=10**6, precision=4, threshold=20)


def _items(obs: ObsArray) -> list[tuple[str, np.ndarray]]:
    """(suffix for messages, array) pairs of an observation field, array or dict."""
    if isinstance(obs, Mapping):
        return [(f"[{key!r}]", value) for key, value in obs.items()]
    return [("", obs)]


# ----------------------------------------------------------------------------------------------------------------
# Shared transformations (used by the loaders, the replay buffers and the env wrappers, so they always agree)
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Minari
# ----------------------------------------------------------------------------------------------------------------


def minari_datasets_root() -> str:
    """
    :return: the local Minari root (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``), without creating it
    """
    root = os.environ.get("MINARI_DATASETS_PATH")
    return root if root is not None else os.path.join(os.path.expanduser("~"), ".minari", "datasets")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def open_minari_dataset(dataset_id: str, download: bool = False) -> Any:
    """
    Open a local Minari dataset, downloading it only when asked to.

    :param dataset_id: e.g. ``"sb3-expo/pendulum-medium-v0"`` or ``"D4RL/door/human-v2"``
    :param download: if the dataset is missing locally, try to download it from the Minari remote
        (never done implicitly; refused at once when ``HF_HUB_OFFLINE=1``)
    :return: the ``minari.MinariDataset``
    :raises OfflineDatasetNotFoundError: when missing (the message says how to download it / where to put it)
    """
    try:
        import minari
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "Loading Minari datasets needs the 'minari' package. Fix: pip install 'minari[hdf5]' "
            "(or sb3-expo[minari])."
        ) from e
    try:
        return minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError:
        pass
    local_path = os.path.join(minari_datasets_root(), dataset_id)
    how = (
        f"Fix: download it once with `minari download {dataset_id}` (needs network), or copy the dataset folder to "
        f"{local_path} (i.e. $MINARI_DATASETS_PATH/{dataset_id}; MINARI_DATASETS_PATH is "
        f"{os.environ.get('MINARI_DATASETS_PATH', 'unset, so ~/.minari/datasets is used')}), or create it "
        "(e.g. python -m sb3_expo.datasets.make_minari ...)."
    )
    if not download:
        raise OfflineDatasetNotFoundError(
            f"Minari dataset {dataset_id!r} is not available locally (looked in {local_path}). {how} "
            "Or pass download=True to download it now."
        )
    if _env_flag("HF_HUB_OFFLINE"):
        # Without this check huggingface_hub would fail anyway, but only after its own error path.
        raise OfflineDatasetNotFoundError(
            f"Minari dataset {dataset_id!r} is not available locally and HF_HUB_OFFLINE=1 forbids downloading it. "
            f"{how} Or unset HF_HUB_OFFLINE."
        )
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as e:
        raise OfflineDatasetNotFoundError(
            f"Minari dataset {dataset_id!r} is not available locally and downloading it failed "
            f"({type(e).__name__}: {e}). {how}"
        ) from e


def _space_dtype(space: spaces.Space) -> Any:
    return space.dtype if space.dtype is not None else np.float32


def load_minari_dataset(
    dataset_id: str,
    env_action_space: spaces.Space | None = None,
    env_observation_space: spaces.Space | None = None,
    *,
    obs_keys: Sequence[str] | None = None,
    out_of_bounds: OutOfBounds = "error",
    download: bool = False,
) -> OfflineDataset:
    """
    Load a Minari dataset into an :class:`OfflineDataset` (all episodes; vectorised).

    Minari episodes hold ``T+1`` observations for ``T`` actions: row ``t`` of an episode is
    ``(obs[t], action[t], reward[t], obs[t+1], terminations[t], truncations[t])``.

    :param dataset_id: local Minari dataset id (``$MINARI_DATASETS_PATH/<id>``)
    :param env_action_space: the env action space; actions are checked against and rescaled with ITS bounds
        (which must equal the dataset's). Defaults to the dataset's action space.
    :param env_observation_space: the env observation space to check against (shape / Dict keys) and whose dtype
        observations are cast to. Defaults to the dataset's (flattened if ``obs_keys``).
    :param obs_keys: for Dict-observation datasets, flatten these keys IN THIS ORDER into one vector with
        :func:`flatten_dict_obs` (wrap the env with ``FlattenDictObservation(env, keys=obs_keys)`` to match).
        None keeps Dict observations as a dict of arrays (for ``MultiInputPolicy``).
    :param out_of_bounds: ``"error"`` (default) raises on actions outside the action space, ``"clip"`` clips
        them and warns with the count
    :param download: download the dataset if missing locally (opt-in; refused when ``HF_HUB_OFFLINE=1``)
    :return: the dataset, actions in ``[-1, 1]``
    :raises OfflineDataError: space mismatch, NaN/inf, out-of-bounds actions, empty dataset
    :raises OfflineDatasetNotFoundError: dataset not available locally
    """
    ds = open_minari_dataset(dataset_id, download=download)
    what = f"Minari dataset {dataset_id!r}"
    data_obs_space = ds.observation_space
    data_act_space = ds.action_space

    # 1) spaces first: cheap, and nothing is read if they do not match
    if obs_keys is not None:
        if not isinstance(data_obs_space, spaces.Dict):
            raise OfflineDataError(
                f"obs_keys={list(obs_keys)} was given but {what} has flat observations {data_obs_space}. "
                "Fix: drop obs_keys."
            )
        obs_keys = list(obs_keys)
        flat_space: spaces.Space = flatten_dict_space(data_obs_space, obs_keys)
    else:
        flat_space = data_obs_space
        if isinstance(data_obs_space, spaces.Dict):
            nested = [k for k, s in data_obs_space.spaces.items() if not isinstance(s, spaces.Box)]
            if nested:
                raise OfflineDataError(
                    f"{what} has non-Box Dict observation entries {nested}, which SB3's MultiInputPolicy cannot "
                    "use. Fix: pass obs_keys=[...] with the Box keys to flatten them into one vector."
                )
        elif not isinstance(data_obs_space, spaces.Box):
            raise OfflineDataError(
                f"{what} has observation space {data_obs_space}; only Box and Dict-of-Box are supported. "
                "Fix: convert the observations to a Box (or Dict of Box) space."
            )
    obs_space = env_observation_space if env_observation_space is not None else flat_space
    if env_observation_space is not None:
        check_observation_space(flat_space, env_observation_space, what=what, obs_keys=obs_keys)
    action_space = env_action_space if env_action_space is not None else data_act_space
    if env_action_space is not None:
        check_action_space(data_act_space, env_action_space, what=what)
    else:
        _check_action_space(data_act_space)

    # 2) read every episode as whole arrays, then one concatenate per field
    obs_parts: list[Any] = []
    next_parts: list[Any] = []
    act_parts, rew_parts, term_parts, trunc_parts, lengths = [], [], [], [], []
    for episode in ds.iterate_episodes():
        n_steps = len(episode.rewards)
        if n_steps == 0:
            continue
        obs = episode.observations
        if isinstance(obs, Mapping):
            if obs_keys is not None:
                obs = flatten_dict_obs(obs, obs_keys, data_obs_space)
            else:
                obs_parts.append({k: v[:-1] for k, v in obs.items()})
                next_parts.append({k: v[1:] for k, v in obs.items()})
        if not isinstance(obs, Mapping):
            obs_parts.append(obs[:-1])
            next_parts.append(obs[1:])
        act_parts.append(np.asarray(episode.actions).reshape(n_steps, -1))
        rew_parts.append(np.asarray(episode.rewards, dtype=np.float32).reshape(n_steps))
        term_parts.append(np.asarray(episode.terminations, dtype=bool).reshape(n_steps))
        trunc_parts.append(np.asarray(episode.truncations, dtype=bool).reshape(n_steps))
        lengths.append(n_steps)

    source = {"kind": "minari", "dataset_id": dataset_id, "obs_keys": obs_keys, "n_episodes": len(lengths)}
    if not lengths:
        raise OfflineDataError(
            f"{what} is empty (0 transitions). Fix: record at least one non-empty episode (e.g. "
            "python -m sb3_expo.datasets.make_minari ...) or pick another dataset."
        )

    def _cat(parts: list[Any], space: spaces.Space) -> ObsArray:
        if isinstance(space, spaces.Dict):
            return {k: np.concatenate([p[k] for p in parts]).astype(_space_dtype(space[k]), copy=False) for k in space.spaces}
        return np.concatenate(parts).astype(_space_dtype(space), copy=False)

    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    dataset = OfflineDataset(
        observations=_cat(obs_parts, obs_space),
        next_observations=_cat(next_parts, obs_space),
        actions=np.concatenate(act_parts),  # raw for now, rescaled below after the checks
        rewards=np.concatenate(rew_parts),
        terminations=np.concatenate(term_parts),
        truncations=np.concatenate(trunc_parts),
        source=source,
        episode_starts=starts,
    )
    # 3) data checks on the raw values, then rescale the actions
    check_finite(dataset, what)
    dataset.actions = _scale_actions(dataset.actions, _check_action_space(action_space), out_of_bounds, dataset.locate, what)
    validate_offline_dataset(dataset, obs_space, action_space, what=what, check_values=False)
    return dataset


# ----------------------------------------------------------------------------------------------------------------
# robomimic
# ----------------------------------------------------------------------------------------------------------------


def _demo_sort_key(name: str) -> tuple[int, Any]:
    suffix = name.split("_")[-1]
    return (0, int(suffix)) if suffix.isdigit() else (1, name)


def _read_demo_field(demo: Any, field: str, n_steps: int | None, what: str, demo_name: str) -> np.ndarray:
    """Read ``demo[field]`` as ``(n_steps, -1)`` (``(n_steps,)`` for rewards / dones), or raise an
    :class:`OfflineDataError` naming the file, the demo and the field (missing, unreadable, or of another length than
    the demo's ``actions``)."""
    if field not in demo:
        raise OfflineDataError(
            f"{what}: data/{demo_name} has no '{field}' dataset (robomimic demos hold actions, rewards, dones, "
            "obs/<key> and next_obs/<key>). Fix: regenerate or repair the file."
        )
    try:
        value = np.asarray(demo[field][()])
    except (OSError, RuntimeError, KeyError) as e:
        raise OfflineDataError(f"{what}: data/{demo_name}/{field} cannot be read ({e}); the file may be corrupt.") from e
    if value.ndim == 0:
        raise OfflineDataError(f"{what}: data/{demo_name}/{field} is a scalar, expected one row per step.")
    if n_steps is None:
        return value.reshape(len(value), -1) if value.ndim != 2 else value
    if len(value) != n_steps:
        raise OfflineDataError(
            f"{what}: data/{demo_name}/{field} has {len(value)} rows but data/{demo_name}/actions has {n_steps}: every "
            "per-step field of a demo must have one row per action. Fix: regenerate or repair the file."
        )
    return value.reshape(n_steps, -1)


def load_robomimic_dataset(
    path: str | os.PathLike,
    obs_keys: Sequence[str],
    filter_key: str | None = None,
    *,
    env_action_space: spaces.Space | None = None,
    env_observation_space: spaces.Space | None = None,
    out_of_bounds: OutOfBounds = "error",
    done_mode: DoneMode = "dones",
) -> OfflineDataset:
    """
    Load a robomimic low-dim HDF5 file (``data/demo_N/{obs,next_obs}/<key>, actions, rewards, dones``) with h5py.

    The observation vector is ``concat_robomimic_obs(obs, obs_keys)``: the low-dim keys are concatenated IN THE
    ORDER GIVEN by ``obs_keys`` (the env wrapper must use the same list). Demos are read in robomimic's order
    (``demo_0, demo_1, ...`` sorted by index), or the demos listed in ``mask/<filter_key>``.

    :param path: the ``.hdf5`` file
    :param obs_keys: low-dim observation keys, in the order they are concatenated
        (e.g. ``["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]``)
    :param filter_key: optional name of a ``mask/<filter_key>`` list of demos (e.g. ``"train"``)
    :param env_action_space: the env action space (robomimic actions are in ``[-1, 1]``; default ``Box(-1, 1)``)
    :param env_observation_space: the env observation space to check the concatenated shape against
    :param out_of_bounds: ``"error"`` or ``"clip"`` for actions outside the action space
    :param done_mode: how terminations are built: ``"dones"`` uses the file's ``dones`` flags, ``"rewards"`` marks
        rows with ``reward > 0`` terminal (sparse success tasks whose online env ends on success), ``"none"`` never.
        The last row of a demo that is not terminal is a truncation (bootstrap from its ``next_obs``).
    :return: the dataset; ``source`` holds ``path``, ``obs_keys``, ``filter_key``, ``env_args`` (the parsed
        ``data.attrs["env_args"]`` JSON, or None) and ``episode_names``
    :raises OfflineDataError: unknown keys / filter, shape mismatch, NaN/inf, out-of-bounds actions, empty
    :raises OfflineDatasetNotFoundError: the file does not exist
    """
    import h5py  # local: only robomimic users need it

    path = os.fspath(path)
    what = f"robomimic dataset {path!r}"
    obs_keys = list(obs_keys)
    if not obs_keys or len(set(obs_keys)) != len(obs_keys):
        raise OfflineDataError(
            f"obs_keys must be a non-empty list of distinct keys, got {obs_keys}. "
            "Fix: e.g. obs_keys=['object', 'robot0_eef_pos', 'robot0_eef_quat', 'robot0_gripper_qpos']."
        )
    if done_mode not in ("dones", "rewards", "none"):
        raise OfflineDataError(f"done_mode must be 'dones', 'rewards' or 'none', got {done_mode!r}.")
    if not os.path.isfile(path):
        raise OfflineDatasetNotFoundError(
            f"{what} does not exist. Fix: download it (robomimic: python robomimic/scripts/download_datasets.py "
            "--tasks lift --dataset_types ph --hdf5_types low_dim) and pass its path."
        )
    action_space = env_action_space

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise OfflineDataError(
            f"{what} cannot be read as HDF5 ({e}). The file may be truncated (an interrupted download or write) or not "
            "an HDF5 file. Fix: download or write it again."
        ) from e
    with f:
        if "data" not in f:
            raise OfflineDataError(f"{what} has no 'data' group; it is not a robomimic dataset.")
        data = f["data"]
        env_args_raw = data.attrs.get("env_args")
        env_args = None
        if env_args_raw is not None:
            env_args = json.loads(env_args_raw.decode() if isinstance(env_args_raw, bytes) else env_args_raw)
        if filter_key is not None:
            if "mask" not in f or filter_key not in f["mask"]:
                available = list(f["mask"].keys()) if "mask" in f else []
                raise OfflineDataError(
                    f"{what} has no filter key {filter_key!r} (available: {available}). "
                    "Fix: pass one of the available filter keys, or filter_key=None for all demos."
                )
            demos = [d.decode() if isinstance(d, bytes) else str(d) for d in np.asarray(f["mask"][filter_key][()])]
            missing = [d for d in demos if d not in data]
            if missing:
                raise OfflineDataError(f"{what}: mask/{filter_key} lists demos not in data/: {missing[:5]}.")
        else:
            demos = sorted(data.keys(), key=_demo_sort_key)
        if not demos:
            raise OfflineDataError(
                f"{what} holds no demos" + (f" under filter key {filter_key!r}" if filter_key else "")
                + ". Fix: pick another file or filter_key."
            )

        obs_parts, next_parts, act_parts, rew_parts, term_parts, trunc_parts, lengths = [], [], [], [], [], [], []
        kept_demos: list[str] = []
        for demo_name in demos:
            demo = data[demo_name]
            for group in ("obs", "next_obs"):
                if group not in demo:
                    raise OfflineDataError(
                        f"{what}: {demo_name} has no '{group}' group. Fix: regenerate the low-dim file with "
                        "robomimic's dataset_states_to_obs.py (it writes obs and next_obs)."
                    )
                missing = [k for k in obs_keys if k not in demo[group]]
                if missing:
                    raise OfflineDataError(
                        f"{what}: observation keys {missing} are not in {demo_name}/{group} "
                        f"(available: {sorted(demo[group].keys())}). Fix: choose obs_keys among the available keys."
                    )
            actions = _read_demo_field(demo, "actions", None, what, demo_name)
            n_steps = len(actions)
            if n_steps == 0:
                continue
            obs = concat_robomimic_obs(
                {k: _read_demo_field(demo, f"obs/{k}", n_steps, what, demo_name) for k in obs_keys}, obs_keys
            )
            nxt = concat_robomimic_obs(
                {k: _read_demo_field(demo, f"next_obs/{k}", n_steps, what, demo_name) for k in obs_keys}, obs_keys
            )
            rewards = _read_demo_field(demo, "rewards", n_steps, what, demo_name).astype(np.float32).reshape(n_steps)
            if done_mode == "dones":
                terms = _read_demo_field(demo, "dones", n_steps, what, demo_name).reshape(n_steps).astype(bool)
            elif done_mode == "rewards":
                terms = rewards > 0
            else:
                terms = np.zeros(n_steps, dtype=bool)
            truncs = np.zeros(n_steps, dtype=bool)
            truncs[-1] = not terms[-1]  # end of demo without a terminal: bootstrap, do not treat as terminal
            obs_parts.append(obs)
            next_parts.append(nxt)
            act_parts.append(actions.reshape(n_steps, -1))
            rew_parts.append(rewards)
            term_parts.append(terms)
            trunc_parts.append(truncs)
            lengths.append(n_steps)
            kept_demos.append(demo_name)

    source = {
        "kind": "robomimic",
        "path": path,
        "obs_keys": obs_keys,
        "filter_key": filter_key,
        "done_mode": done_mode,
        "env_args": env_args,
        "episode_names": kept_demos,
    }
    if not lengths:
        raise OfflineDataError(f"{what} is empty (0 transitions). Fix: pick another file or filter_key.")
    act_dim = act_parts[0].shape[1]
    if any(a.shape[1] != act_dim for a in act_parts):
        raise OfflineDataError(f"{what}: demos have different action dimensions.")
    if action_space is None:
        action_space = spaces.Box(-1.0, 1.0, shape=(act_dim,), dtype=np.float32)
    box = _check_action_space(action_space)
    if int(np.prod(box.shape)) != act_dim:
        raise OfflineDataError(
            f"Action shape mismatch: {what} has {act_dim}-dim actions, the env has {box.shape}. "
            "Fix: use the env (robot, controller) the dataset was recorded with."
        )
    obs_dim = obs_parts[0].shape[1]
    if env_observation_space is not None:
        check_observation_space(
            spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32), env_observation_space, what=what, obs_keys=obs_keys
        )
    obs_dtype = _space_dtype(env_observation_space) if env_observation_space is not None else np.float32
    dataset = OfflineDataset(
        observations=np.concatenate(obs_parts).astype(obs_dtype, copy=False),
        next_observations=np.concatenate(next_parts).astype(obs_dtype, copy=False),
        actions=np.concatenate(act_parts),
        rewards=np.concatenate(rew_parts),
        terminations=np.concatenate(term_parts),
        truncations=np.concatenate(trunc_parts),
        source=source,
        episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
    )
    check_finite(dataset, what)
    dataset.actions = _scale_actions(dataset.actions, box, out_of_bounds, dataset.locate, what)
    validate_offline_dataset(dataset, env_observation_space, box, what=what, check_values=False)
    return dataset
