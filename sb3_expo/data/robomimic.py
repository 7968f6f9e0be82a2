"""robomimic low-dim HDF5 files (``data/demo_N/{obs,next_obs}/<key>, actions, rewards, dones``) read with h5py into
an :class:`~sb3_expo.data.dataset.OfflineDataset`.

Vectorised: each demo is read as whole arrays and the demos are joined with one ``np.concatenate`` per field. h5py is
imported only when a file is loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_expo.data.dataset import (
    DoneMode,
    OfflineDataError,
    OfflineDataset,
    OfflineDatasetNotFoundError,
    OutOfBounds,
    _space_dtype,
)
from sb3_expo.data.transforms import concat_robomimic_obs
from sb3_expo.data.validation import (
    _check_action_space,
    _scale_actions,
    check_finite,
    check_observation_space,
    validate_offline_dataset,
)

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
