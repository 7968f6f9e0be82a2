"""The offline dataset type: :class:`OfflineDataset`, a flat table of transitions as numpy arrays, and the errors the
loaders raise.

Conventions shared by the loaders (:mod:`sb3_expo.data.minari`, :mod:`sb3_expo.data.robomimic`), the replay buffers
(:mod:`sb3_expo.buffers.offline`) and the env wrappers (:mod:`sb3_expo.wrappers.env_wrappers`):

* actions are stored rescaled to ``[-1, 1]`` with exactly the formula of SB3's ``policy.scale_action``
  (``2 * ((a - low) / (high - low)) - 1``), because SB3's off-policy algorithms with squashed policies store
  scaled actions in their replay buffer;
* ``terminations`` and ``truncations`` are kept apart: a time-limit truncation is not a terminal for the TD target;
* Dict observations are either kept as a dict of arrays (for ``MultiInputPolicy``) or flattened with
  :func:`~sb3_expo.data.transforms.flatten_dict_obs`, the single function the env wrapper
  :class:`~sb3_expo.wrappers.env_wrappers.FlattenDictObservation` uses too, so that env and dataset agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
from gymnasium import spaces

ObsArray = Union[np.ndarray, dict[str, np.ndarray]]
OutOfBounds = Literal["error", "clip"]
DoneMode = Literal["dones", "rewards", "none"]


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


def _space_dtype(space: spaces.Space) -> Any:
    """The dtype arrays of ``space`` are stored in (float32 when the space has none)."""
    return space.dtype if space.dtype is not None else np.float32
