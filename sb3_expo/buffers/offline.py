"""Replay buffers with a fixed offline part and an online part ("symmetric sampling", RLPD / EXPO).

``sample(n)`` returns ``round(offline_fraction * n)`` offline rows spread evenly through the batch: row ``i`` is
offline iff ``floor((i + 1) * f) > floor(i * f)``. Hence EVERY contiguous chunk of ``B`` rows holds
``floor(f * B)`` or ``ceil(f * B)`` offline rows, which EXPO relies on: its ``train()`` samples
``batch_size * gradient_steps`` rows once per env step and splits them into ``gradient_steps`` chunks.

They are drop-in ``replay_buffer_class`` values for EXPO and for SB3's SAC/TD3 and sb3_contrib's TQC::

    SAC("MlpPolicy", env, replay_buffer_class=MinariReplayBuffer,
        replay_buffer_kwargs=dict(dataset_id="sb3-expo/pendulum-medium-v0"))

The same class works for Box and Dict observation spaces: ``MinariReplayBuffer(...)`` with a Dict space returns a
:class:`DictMinariReplayBuffer` (a subclass of both ``MinariReplayBuffer`` and SB3's ``DictReplayBuffer``).

They are :class:`~sb3_expo.wrappers.DeviceReplayBuffer` subclasses: with ``storage="auto"`` (default) on CUDA, or
``storage="device"``, the online AND the offline arrays are torch tensors on the model's device.

Portable checkpoints: SB3's ``load`` (``EXPO.load``, ``SAC.load``, ...) rebuilds the buffer from the saved
``replay_buffer_class`` / ``replay_buffer_kwargs``. When :class:`MinariReplayBuffer` / :class:`RobomimicReplayBuffer`
cannot find their dataset there, they do not raise: they warn once (:class:`OfflineDatasetMissingWarning`, naming the
dataset and how to re-attach it) and start with no offline part, so ``predict``, evaluation and online ``learn()``
work (on online data only) until ``model.replay_buffer.attach_offline()``. Built directly (a new model), a missing
dataset still raises :class:`~sb3_expo.wrappers.OfflineDatasetNotFoundError`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import DictReplayBufferSamples, ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from sb3_expo.buffers.device import DeviceReplayBuffer, DictDeviceReplayBuffer, _tree_map, check_storage
from sb3_expo.data.dataset import DoneMode, OfflineDataError, OfflineDataset, OfflineDatasetNotFoundError, OutOfBounds
from sb3_expo.data.minari import load_minari_dataset, minari_datasets_root
from sb3_expo.data.robomimic import load_robomimic_dataset
from sb3_expo.data.transforms import transform_reward
from sb3_expo.data.validation import validate_offline_dataset

Samples = Union[ReplayBufferSamples, DictReplayBufferSamples]


class OfflineDatasetMissingWarning(UserWarning):
    """A model was loaded where its offline dataset is not available: its buffer starts without the offline part."""


def _inside_sb3_load() -> bool:
    """Whether the caller runs inside SB3's ``BaseAlgorithm.load`` (any algorithm: EXPO, SAC, TD3, TQC, ...), which
    rebuilds the replay buffer from the checkpoint's ``replay_buffer_class`` / ``replay_buffer_kwargs``. Frames are
    matched by code object, not by name, so no other ``load`` is mistaken for it."""
    from stable_baselines3.common.base_class import BaseAlgorithm

    target = BaseAlgorithm.load.__func__.__code__  # type: ignore[attr-defined]
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is target:
            return True
        frame = frame.f_back
    return False


def _empty_dataset(observation_space: spaces.Space, action_space: spaces.Space) -> OfflineDataset:
    """A zero-row dataset shaped like the buffer's spaces (the offline part of a buffer whose dataset is missing)."""

    def empty_obs() -> Any:
        if isinstance(observation_space, spaces.Dict):
            return {k: np.zeros((0, *s.shape), dtype=s.dtype) for k, s in observation_space.spaces.items()}
        return np.zeros((0, *observation_space.shape), dtype=observation_space.dtype)

    action_dim = int(np.prod(action_space.shape))
    none = np.zeros(0, dtype=bool)
    return OfflineDataset(empty_obs(), empty_obs(), np.zeros((0, action_dim), np.float32), np.zeros(0, np.float32), none, none)


def offline_row_mask(n_rows: int, offline_fraction: float) -> np.ndarray:
    """
    Which rows of a sampled batch are offline: row ``i`` is offline iff ``floor((i+1)*f) > floor(i*f)``.

    Exact integer arithmetic (``f`` as a fraction) so that every contiguous chunk of ``B`` rows has
    ``floor(f*B)`` or ``ceil(f*B)`` offline rows, without float round-off.

    :param n_rows: batch size
    :param offline_fraction: ``f`` in ``[0, 1]``
    :return: bool array ``(n_rows,)``
    """
    frac = Fraction(offline_fraction).limit_denominator(1_000_000)
    p, q = frac.numerator, frac.denominator
    i = np.arange(n_rows + 1, dtype=np.int64)
    cum = (i * p) // q  # number of offline rows among the first i rows
    return np.diff(cum) > 0


class OfflineReplayBuffer(DeviceReplayBuffer):
    """
    SB3 replay buffer (the online part, ``buffer_size`` transitions, filled by ``add()`` as usual) plus a fixed
    offline part taken from an :class:`~sb3_expo.wrappers.OfflineDataset`.

    Minibatches mix both: ``sample(n)`` returns ``offline_fraction * n`` offline rows (rounded per the even layout
    of :func:`offline_row_mask`), and only offline rows while the online part is empty. Offline ``dones`` are the
    dataset's terminations only (a truncation is not a terminal), so the TD target bootstraps through timeouts.
    The offline part does not count against ``buffer_size`` and is never overwritten.

    Pickling (SB3's ``save_replay_buffer`` / ``load_replay_buffer``) stores the offline arrays too. With tensor
    storage (see :class:`~sb3_expo.wrappers.DeviceReplayBuffer`) the sampled offline arrays (observations, next
    observations, actions, rewards, dones) are tensors on the device as well; ``offline_truncations`` (never
    sampled) stays a numpy array.
    Prefer the loading subclasses (:class:`MinariReplayBuffer`, :class:`RobomimicReplayBuffer`) in
    ``replay_buffer_kwargs``: SB3 saves those kwargs with the model, so a ``dataset=`` object would be saved in every
    model zip, while a ``dataset_id`` / ``path`` is just a string.

    :param buffer_size: capacity of the online part
    :param observation_space: observation space (Box, or Dict for the ``Dict*`` variants picked automatically)
    :param action_space: Box action space
    :param device: PyTorch device of the sampled tensors
    :param n_envs: number of parallel envs (online part)
    :param optimize_memory_usage: SB3's memory-efficient online storage (Box only)
    :param handle_timeout_termination: SB3's timeout handling for the online part
    :param storage: ``"auto"`` (tensors on the device when it is CUDA, numpy otherwise), ``"device"`` or ``"host"``
        (see :class:`~sb3_expo.wrappers.DeviceReplayBuffer`); applies to the online and the offline arrays
    :param dataset: the offline data (actions in ``[-1, 1]``); subclasses load it from ``dataset_id`` / ``path``
    :param offline_fraction: share of offline rows in each sampled minibatch (0.5 = symmetric sampling)
    :param reward_shift: added to offline rewards (after ``reward_scale``); match the env's
        :class:`~sb3_expo.wrappers.ShiftScaleReward` (e.g. ``-1`` on Antmaze)
    :param reward_scale: multiplies offline rewards
    """

    # DeviceReplayBuffer.__new__ swaps to the exact class's `_dict_variant` (set below) for Dict spaces, so one
    # class name works in zoo YAMLs for both. The offline arrays move with `device` like the online ones.
    _stored_fields = DeviceReplayBuffer._stored_fields + (
        "offline_observations",
        "offline_next_observations",
        "offline_actions",
        "offline_rewards",
        "offline_dones",
    )

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        storage: str = "auto",
        dataset: OfflineDataset | None = None,
        offline_fraction: float = 0.5,
        reward_shift: float = 0.0,
        reward_scale: float = 1.0,
    ):
        if not 0.0 <= float(offline_fraction) <= 1.0:
            raise OfflineDataError(
                f"offline_fraction must be in [0, 1], got {offline_fraction}. Fix: e.g. offline_fraction=0.5."
            )
        # A loading subclass sets _missing_dataset (a message) when SB3's load() rebuilds it without its dataset.
        detached = dataset is None and getattr(self, "_missing_dataset", None) is not None
        if dataset is None and not detached:
            raise OfflineDataError(
                f"{type(self).__name__} needs offline data. Fix: pass replay_buffer_kwargs=dict(dataset=...) "
                "(an OfflineDataset), or use MinariReplayBuffer(dataset_id=...) / RobomimicReplayBuffer(path=...)."
            )
        # Validate everything BEFORE SB3 allocates the online arrays: an error leaves nothing half-built.
        check_storage(storage)
        if dataset is not None:
            validate_offline_dataset(dataset, observation_space, action_space)
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
            storage=storage,
        )
        self.offline_fraction = float(offline_fraction)
        self.reward_shift = float(reward_shift)
        self.reward_scale = float(reward_scale)
        self._set_offline(dataset if dataset is not None else _empty_dataset(observation_space, action_space))
        if detached:
            warnings.warn(self._missing_dataset, OfflineDatasetMissingWarning, stacklevel=3)

    # -- attaching the offline part (after a load without the dataset) ------------------------------------------

    @property
    def offline_attached(self) -> bool:
        """Whether the buffer holds offline data (False after a load where the dataset was not available)."""
        return self.offline_size > 0

    def attach_offline(self, dataset: OfflineDataset | None = None, **load_kwargs: Any) -> None:
        """
        (Re-)attach the offline part, e.g. after ``EXPO.load`` / ``SAC.load`` on a machine where the dataset was
        missing. The loading subclasses read their dataset again (same id / path and options as saved); here pass
        ``dataset``. Validated against the buffer's spaces first: on error the buffer is unchanged.

        :param dataset: the offline data (required for this base class)
        :param load_kwargs: options of the subclass's loader (``download=True`` for Minari, ``path=`` for robomimic)
        """
        if dataset is None:
            dataset = self._load_offline(**load_kwargs)
        validate_offline_dataset(dataset, self.observation_space, self.action_space)
        self._set_offline(dataset)
        self._missing_dataset = None

    def _load_offline(self, **load_kwargs: Any) -> OfflineDataset:
        raise OfflineDataError(
            f"{type(self).__name__} does not know where its data comes from. Fix: attach_offline(dataset=...)."
        )

    def _detach_or_raise(self, error: Exception, message: str) -> None:
        """Inside SB3's ``load``: remember ``message`` (warned once by ``__init__``) and go on without offline data;
        anywhere else (a new model, a direct construction): re-raise ``error``."""
        if not _inside_sb3_load():
            raise error
        self._missing_dataset = message

    # -- offline storage --------------------------------------------------------------------------------------

    def _set_offline(self, dataset: OfflineDataset) -> None:
        is_dict = isinstance(self.observation_space, spaces.Dict)
        if is_dict:
            assert isinstance(dataset.observations, dict) and isinstance(dataset.next_observations, dict)
            self.offline_observations: np.ndarray | dict[str, np.ndarray] = {
                k: np.ascontiguousarray(dataset.observations[k], dtype=self.observation_space[k].dtype)
                for k in self.observation_space.spaces
            }
            self.offline_next_observations: np.ndarray | dict[str, np.ndarray] = {
                k: np.ascontiguousarray(dataset.next_observations[k], dtype=self.observation_space[k].dtype)
                for k in self.observation_space.spaces
            }
        else:
            self.offline_observations = np.ascontiguousarray(dataset.observations, dtype=self.observation_space.dtype)
            self.offline_next_observations = np.ascontiguousarray(
                dataset.next_observations, dtype=self.observation_space.dtype
            )
        # Same dtype as the online actions (SB3 casts float64 action spaces to float32).
        action_dtype = self._maybe_cast_dtype(self.action_space.dtype)
        actions = dataset.actions.reshape(len(dataset), self.action_dim)
        self.offline_actions = np.ascontiguousarray(actions, dtype=action_dtype)
        self.offline_rewards = np.asarray(
            transform_reward(dataset.rewards.astype(np.float32), self.reward_shift, self.reward_scale), dtype=np.float32
        )
        # Terminations only: a timeout/truncation must bootstrap.
        self.offline_dones = dataset.terminations.astype(np.float32)
        self.offline_truncations = dataset.truncations.astype(bool)
        self.offline_source = dict(dataset.source)
        # Tensor storage: the sampled offline arrays go to the device once, here (numpy arrays otherwise).
        for name in self._stored_fields:
            if name.startswith("offline_"):
                setattr(self, name, self._to_storage(getattr(self, name)))

    @property
    def offline_size(self) -> int:
        """Number of offline transitions."""
        return len(self.offline_actions)

    @property
    def online_size(self) -> int:
        """Number of online transitions stored so far (per env column, like SB3's ``size()``)."""
        return self.size()

    # -- sampling ---------------------------------------------------------------------------------------------

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> Samples:  # type: ignore[override]
        """
        Sample a mixed minibatch: offline rows at the positions of :func:`offline_row_mask` (so any contiguous
        chunk holds ~``offline_fraction`` offline rows), online rows elsewhere; only offline rows while the
        online part is empty.

        :param batch_size: number of rows
        :param env: the VecNormalize wrapper, if any, to normalize observations and rewards (as SB3 does)
        :return: ``ReplayBufferSamples`` (Box) or ``DictReplayBufferSamples`` (Dict)
        """
        if not self.offline_attached:  # loaded without its dataset: online rows only
            if self.online_size == 0:
                self.sample_offline(batch_size, env)  # raises: nothing to sample, and says how to attach the data
            return super().sample(batch_size, env=env)
        if self.online_size == 0:
            return self.sample_offline(batch_size, env)
        mask = offline_row_mask(batch_size, self.offline_fraction)
        n_off = int(mask.sum())
        if n_off == batch_size:
            return self.sample_offline(batch_size, env)
        online = super().sample(batch_size - n_off, env=env)
        if n_off == 0:
            return online
        offline = self.sample_offline(n_off, env)
        # Row order: offline rows where mask is True, online rows elsewhere (both in sampled order).
        order = np.empty(batch_size, dtype=np.int64)
        order[mask] = np.arange(n_off)
        order[~mask] = n_off + np.arange(batch_size - n_off)
        return _interleave(offline, online, th.as_tensor(order, device=self.device))

    def sample_offline(self, batch_size: int, env: VecNormalize | None = None) -> Samples:
        """
        Sample offline rows only (uniformly, with replacement). Used for pretraining (``EXPO.pretrain``).

        :param batch_size: number of rows
        :param env: the VecNormalize wrapper, if any
        :return: ``ReplayBufferSamples`` (Box) or ``DictReplayBufferSamples`` (Dict)
        """
        if not self.offline_attached:
            raise OfflineDataError(
                f"This {type(self).__name__} has no offline part: "
                + (getattr(self, "_missing_dataset", None) or "its dataset is empty.")
            )
        # np.random like SB3's own buffers, so that model.set_random_seed makes sampling reproducible.
        inds = np.random.randint(0, self.offline_size, size=batch_size)
        return self._get_offline_samples(inds, env)

    def _get_offline_samples(self, inds: np.ndarray, env: VecNormalize | None = None) -> Samples:
        if self.tensor_storage:
            return self._get_offline_samples_on_device(inds, env)
        actions = self.to_torch(self.offline_actions[inds])
        dones = self.to_torch(self.offline_dones[inds].reshape(-1, 1))
        rewards = self.to_torch(self._normalize_reward(self.offline_rewards[inds].reshape(-1, 1), env))
        if isinstance(self.offline_observations, dict):
            assert isinstance(self.offline_next_observations, dict)
            obs = self._normalize_obs({k: v[inds] for k, v in self.offline_observations.items()}, env)
            next_obs = self._normalize_obs({k: v[inds] for k, v in self.offline_next_observations.items()}, env)
            assert isinstance(obs, dict) and isinstance(next_obs, dict)
            return DictReplayBufferSamples(
                observations={k: self.to_torch(v) for k, v in obs.items()},
                actions=actions,
                next_observations={k: self.to_torch(v) for k, v in next_obs.items()},
                dones=dones,
                rewards=rewards,
            )
        return ReplayBufferSamples(
            observations=self.to_torch(self._normalize_obs(self.offline_observations[inds], env)),  # type: ignore[arg-type]
            actions=actions,
            next_observations=self.to_torch(self._normalize_obs(self.offline_next_observations[inds], env)),  # type: ignore[arg-type]
            dones=dones,
            rewards=rewards,
        )

    def _get_offline_samples_on_device(self, inds: np.ndarray, env: VecNormalize | None = None) -> Samples:
        """:meth:`_get_offline_samples` for tensor storage: the rows are gathered on the device."""
        rows = th.from_numpy(np.asarray(inds, dtype=np.int64)).to(self.device)  # the only host->device copy

        def take(arr: th.Tensor) -> th.Tensor:
            return arr[rows]

        obs = self._normalized_obs(_tree_map(take, self.offline_observations), env)
        next_obs = self._normalized_obs(_tree_map(take, self.offline_next_observations), env)
        samples_cls = DictReplayBufferSamples if isinstance(obs, dict) else ReplayBufferSamples
        return samples_cls(
            observations=obs,
            actions=take(self.offline_actions),  # type: ignore[arg-type]
            next_observations=next_obs,
            dones=take(self.offline_dones).reshape(-1, 1),  # type: ignore[arg-type]
            rewards=self._normalized_reward(take(self.offline_rewards).reshape(-1, 1), env),  # type: ignore[arg-type]
        )


def _interleave(offline: Samples, online: Samples, order: th.Tensor) -> Samples:
    """``cat([offline, online])[order]`` field by field (dict observations key by key)."""

    def merge(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if isinstance(a, dict):
            return {k: th.cat([a[k], b[k].to(a[k].dtype)])[order] for k in a}
        return th.cat([a, b.to(a.dtype)])[order]

    return type(offline)(*[merge(a, b) for a, b in zip(offline, online)])


class DictOfflineReplayBuffer(OfflineReplayBuffer, DictDeviceReplayBuffer):
    """Dict-observation variant of :class:`OfflineReplayBuffer` (picked automatically for Dict spaces)."""


OfflineReplayBuffer._dict_variant = DictOfflineReplayBuffer


class MinariReplayBuffer(OfflineReplayBuffer):
    """
    :class:`OfflineReplayBuffer` whose offline part is a local Minari dataset, loaded (vectorised) and validated
    against the env spaces before anything is allocated. Works with EXPO, SAC, TD3 and TQC::

        EXPO("MlpPolicy", env, replay_buffer_class=MinariReplayBuffer,
             replay_buffer_kwargs=dict(dataset_id="sb3-expo/pendulum-medium-v0"))

    With a Dict observation space the instance is a :class:`DictMinariReplayBuffer` (use ``MultiInputPolicy``),
    unless ``obs_keys`` flattens the observations (then wrap the env with
    ``FlattenDictObservation(env, keys=obs_keys)``).

    :param buffer_size: capacity of the online part
    :param observation_space: observation space
    :param action_space: Box action space (the dataset's bounds must equal it)
    :param device: PyTorch device
    :param n_envs: number of parallel envs
    :param optimize_memory_usage: SB3's memory-efficient online storage (Box only)
    :param handle_timeout_termination: SB3's timeout handling for the online part
    :param storage: ``"auto"``, ``"device"`` or ``"host"`` (see :class:`OfflineReplayBuffer`)
    :param dataset_id: local Minari dataset id (``$MINARI_DATASETS_PATH/<id>``)
    :param obs_keys: flatten these Dict observation keys IN THIS ORDER (None: keep Dict observations)
    :param out_of_bounds: ``"error"`` or ``"clip"`` for dataset actions outside the action space
    :param download: download the dataset if it is not local (opt-in; refused when ``HF_HUB_OFFLINE=1``)
    :param offline_fraction: share of offline rows per minibatch
    :param reward_shift: added to offline rewards (match the env's ``ShiftScaleReward``)
    :param reward_scale: multiplies offline rewards
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        *args: Any,
        dataset_id: str,
        obs_keys: Sequence[str] | None = None,
        out_of_bounds: OutOfBounds = "error",
        download: bool = False,
        **kwargs: Any,
    ):
        self.dataset_id = dataset_id
        self.obs_keys = list(obs_keys) if obs_keys is not None else None
        self.out_of_bounds = out_of_bounds
        self.download = download
        # Load and validate everything before SB3 allocates the online part: nothing half-built on error.
        dataset: OfflineDataset | None = None
        try:
            dataset = self._read(observation_space, action_space, download)
        except (OfflineDatasetNotFoundError, ImportError) as e:
            self._detach_or_raise(e, self._missing_message(e))
        # *args/**kwargs: SB3's ReplayBuffer arguments and OfflineReplayBuffer's (offline_fraction, reward_shift, ...)
        super().__init__(buffer_size, observation_space, action_space, *args, dataset=dataset, **kwargs)

    def _read(self, observation_space: spaces.Space, action_space: spaces.Space, download: bool) -> OfflineDataset:
        return load_minari_dataset(
            self.dataset_id,
            env_action_space=action_space,
            env_observation_space=observation_space,
            obs_keys=self.obs_keys,
            out_of_bounds=self.out_of_bounds,
            download=download,
        )

    def _load_offline(self, download: bool | None = None) -> OfflineDataset:  # type: ignore[override]
        """:meth:`attach_offline` for Minari: read ``dataset_id`` again (``download=True`` to fetch it if missing)."""
        return self._read(self.observation_space, self.action_space, self.download if download is None else download)

    def _missing_message(self, error: Exception) -> str:
        root = minari_datasets_root()
        where = f"$MINARI_DATASETS_PATH={root}" if os.environ.get("MINARI_DATASETS_PATH") else f"{root}, MINARI_DATASETS_PATH unset"
        why = "the 'minari' package is not installed" if isinstance(error, ImportError) else f"not in {where}"
        return (
            f"Offline dataset: Minari dataset {self.dataset_id!r} is not available on this machine ({why}), so this "
            f"model's {type(self).__name__} starts without its offline part: predict, evaluation and learn() work, "
            "learn() on online data only (pretrain() needs the dataset). To re-attach it, make the dataset local "
            f"(`minari download {self.dataset_id}`, or copy it to {os.path.join(root, self.dataset_id)}) and call "
            "model.replay_buffer.attach_offline()."
        )


class DictMinariReplayBuffer(MinariReplayBuffer, DictDeviceReplayBuffer):
    """Dict-observation variant of :class:`MinariReplayBuffer` (picked automatically for Dict spaces)."""


MinariReplayBuffer._dict_variant = DictMinariReplayBuffer


class RobomimicReplayBuffer(OfflineReplayBuffer):
    """
    :class:`OfflineReplayBuffer` whose offline part is a robomimic low-dim HDF5 file. The observation is the
    concatenation of ``obs_keys`` IN THE ORDER GIVEN (``concat_robomimic_obs``); the env must build the same
    vector. Box observation spaces only.

    :param buffer_size: capacity of the online part
    :param observation_space: Box observation space (``sum of obs_keys dims``,)
    :param action_space: Box action space (robomimic actions are in ``[-1, 1]``)
    :param device: PyTorch device
    :param n_envs: number of parallel envs
    :param optimize_memory_usage: SB3's memory-efficient online storage
    :param handle_timeout_termination: SB3's timeout handling for the online part
    :param storage: ``"auto"``, ``"device"`` or ``"host"`` (see :class:`OfflineReplayBuffer`)
    :param path: the robomimic ``.hdf5`` file
    :param obs_keys: low-dim keys, concatenated in this order
    :param filter_key: optional ``mask/<filter_key>`` demo subset
    :param done_mode: ``"dones"``, ``"rewards"`` or ``"none"`` (see ``load_robomimic_dataset``)
    :param out_of_bounds: ``"error"`` or ``"clip"`` for dataset actions outside the action space
    :param offline_fraction: share of offline rows per minibatch
    :param reward_shift: added to offline rewards (match the env's ``ShiftScaleReward``)
    :param reward_scale: multiplies offline rewards
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        *args: Any,
        path: str | os.PathLike,
        obs_keys: Sequence[str],
        filter_key: str | None = None,
        done_mode: DoneMode = "dones",
        out_of_bounds: OutOfBounds = "error",
        **kwargs: Any,
    ):
        self.path = os.fspath(path)
        self.obs_keys = list(obs_keys)
        self.filter_key = filter_key
        self.done_mode = done_mode
        self.out_of_bounds = out_of_bounds
        dataset: OfflineDataset | None = None
        try:
            dataset = self._read(observation_space, action_space)
        except (OfflineDatasetNotFoundError, ImportError) as e:
            self._detach_or_raise(e, self._missing_message(e))
        super().__init__(buffer_size, observation_space, action_space, *args, dataset=dataset, **kwargs)

    def _read(self, observation_space: spaces.Space, action_space: spaces.Space) -> OfflineDataset:
        return load_robomimic_dataset(
            self.path,
            self.obs_keys,
            self.filter_key,
            env_action_space=action_space,
            env_observation_space=observation_space,
            out_of_bounds=self.out_of_bounds,
            done_mode=self.done_mode,
        )

    def _load_offline(self, path: str | os.PathLike | None = None) -> OfflineDataset:  # type: ignore[override]
        """:meth:`attach_offline` for robomimic: read the file again (``path=`` if it now lives elsewhere)."""
        previous = self.path
        if path is not None:
            self.path = os.fspath(path)
        try:
            return self._read(self.observation_space, self.action_space)
        except Exception:
            self.path = previous
            raise

    def _missing_message(self, error: Exception) -> str:
        why = "h5py is not installed" if isinstance(error, ImportError) else "the file does not exist"
        return (
            f"Offline dataset: robomimic dataset {self.path!r} is not available on this machine ({why}), so this "
            f"model's {type(self).__name__} starts without its offline part: predict, evaluation and learn() work, "
            "learn() on online data only (pretrain() needs the dataset). To re-attach it, put the file there and call "
            "model.replay_buffer.attach_offline(), or model.replay_buffer.attach_offline(path=...) where it is."
        )
