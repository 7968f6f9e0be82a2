"""Minari datasets (local ``$MINARI_DATASETS_PATH/<id>``; downloads only when asked) read into an
:class:`~sb3_expo.data.dataset.OfflineDataset`.

Vectorised: each episode is read as whole arrays and the episodes are joined with one ``np.concatenate`` per field,
so a 1M-transition dataset loads in seconds (no per-transition Python loop). The ``minari`` package is imported only
when a dataset is opened (absolute imports: this module's name does not shadow the library).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_expo.data.dataset import (
    ObsArray,
    OfflineDataError,
    OfflineDataset,
    OfflineDatasetNotFoundError,
    OutOfBounds,
    _space_dtype,
)
from sb3_expo.data.transforms import flatten_dict_obs, flatten_dict_space
from sb3_expo.data.validation import (
    _check_action_space,
    _scale_actions,
    check_action_space,
    check_finite,
    check_observation_space,
    validate_offline_dataset,
)

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
