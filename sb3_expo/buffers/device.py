"""Replay buffers whose arrays live on the model's device (GPU-resident replay).

SB3's :class:`~stable_baselines3.common.buffers.ReplayBuffer` keeps numpy arrays in host memory and copies every
sampled minibatch to the device. EXPO's ``train()`` samples ``gradient_steps * batch_size`` rows once per env step,
so on CUDA that copy (and the host-side gather before it) sits on the critical path of every step.
:class:`DeviceReplayBuffer` stores the transitions as torch tensors on ``self.device`` instead:

* ``add()`` packs the transition into one host staging buffer and sends it with ONE host->device copy per env step;
* ``sample()`` draws the same indices as SB3 (``np.random``) and gathers the rows on the device (one small copy of
  the indices), so a seeded run samples exactly the rows, values and dtypes SB3's buffer would.

::

    EXPO("MlpPolicy", env, device="cuda", replay_buffer_class=DeviceReplayBuffer)

``storage="auto"`` (default) keeps tensors on the device only when it is a GPU and is plain SB3 (numpy) otherwise;
``"device"`` forces tensors (also on the CPU: that is how the tests check the tensor path), ``"host"`` forces numpy.
The same class works for Box and Dict observation spaces: with a Dict space ``DeviceReplayBuffer(...)`` returns a
:class:`DictDeviceReplayBuffer` (a subclass of both ``DeviceReplayBuffer`` and SB3's ``DictReplayBuffer``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples, ReplayBufferSamples
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecNormalize

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is an SB3 extra
    psutil = None

STORAGE_CHOICES = ("auto", "device", "host")

Stored = Union[np.ndarray, th.Tensor, dict[str, Any]]

# Byte alignment of each field in the packed staging buffer: torch's ``Tensor.view(dtype)`` needs the byte offset
# to be a multiple of the item size (16 covers complex128).
_ALIGN = 16


def check_storage(storage: str) -> str:
    """
    :param storage: ``"auto"``, ``"device"`` or ``"host"``
    :return: ``storage``, if valid
    :raises ValueError: for any other value
    """
    if storage not in STORAGE_CHOICES:
        raise ValueError(
            f"storage must be one of {', '.join(repr(c) for c in STORAGE_CHOICES)}, got {storage!r}. Fix: 'auto' "
            "(tensors on the device when it is CUDA, numpy otherwise), 'device' (always tensors on the device) or "
            "'host' (SB3's numpy arrays)."
        )
    return storage


def uses_device_storage(storage: str, device: th.device) -> bool:
    """
    :param storage: ``"auto"``, ``"device"`` or ``"host"``
    :param device: the buffer's device
    :return: whether the arrays are torch tensors on ``device`` (True) or numpy arrays in host memory (False)
    """
    check_storage(storage)
    if storage == "auto":
        return device.type == "cuda"
    return storage == "device"


def torch_dtype(dtype: np.typing.DTypeLike) -> th.dtype:
    """
    :param dtype: a numpy dtype
    :return: the torch dtype that ``th.from_numpy`` (hence SB3's ``to_torch``) gives arrays of that dtype
    """
    try:
        return th.from_numpy(np.empty(0, dtype=dtype)).dtype
    except TypeError as e:
        raise TypeError(
            f"Numpy dtype {np.dtype(dtype)} has no torch equivalent, so it cannot be stored on the device. "
            "Fix: storage='host' (SB3's numpy buffer), or cast the space (e.g. to float32)."
        ) from e


def _tree_map(fn: Callable[[Any], Any], x: Any) -> Any:
    """``fn`` on an array, or on each value of a dict of arrays (Dict observations)."""
    if isinstance(x, dict):
        return {k: fn(v) for k, v in x.items()}
    return fn(x)


def _to_numpy(x: np.ndarray | th.Tensor) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, th.Tensor) else x


def _to_tensor(x: np.ndarray | th.Tensor, device: th.device) -> th.Tensor:
    if isinstance(x, th.Tensor):
        return x.to(device)
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:  # th.from_numpy warns on read-only arrays (e.g. memory-mapped data)
        x = x.copy()
    return th.from_numpy(x).to(device)


class DeviceReplayBuffer(ReplayBuffer):
    """
    SB3 replay buffer whose arrays (``observations``, ``next_observations``, ``actions``, ``rewards``, ``dones``,
    ``timeouts``) are torch tensors on ``self.device`` (same shapes and dtypes as SB3's numpy arrays), so sampling
    gathers on the device with no host->device copy of the minibatch. Same semantics as SB3's ``ReplayBuffer``:
    ``optimize_memory_usage``, ``handle_timeout_termination``, ``n_envs > 1``, wrap-around; for the same
    ``np.random`` seed and the same added transitions, ``sample()`` returns exactly what SB3's buffer returns.

    With a VecNormalize ``env`` passed to ``sample()``, the sampled rows go to the host, are normalized by SB3's
    (numpy) code and come back: exact, but one device->host->device round trip per sample.

    Setting ``device`` (SB3's ``load_replay_buffer`` does) moves the arrays to the new device. Pickles hold numpy
    arrays, so a buffer saved from a GPU loads on a machine without one (onto the CPU).

    :param buffer_size: Max number of elements in the buffer
    :param observation_space: Observation space (Box, ...; Dict picks :class:`DictDeviceReplayBuffer`)
    :param action_space: Action space
    :param device: PyTorch device
    :param n_envs: Number of parallel environments
    :param optimize_memory_usage: SB3's memory-efficient variant (Box observations only, and not together with
        ``handle_timeout_termination``, as in SB3)
    :param handle_timeout_termination: Handle timeout termination (``TimeLimit.truncated``) separately, as SB3 does
    :param storage: ``"auto"`` (tensors on the device when it is CUDA, SB3's numpy arrays otherwise), ``"device"``
        (always tensors on the device, also on the CPU) or ``"host"`` (always SB3's numpy arrays)
    """

    # Dict-observation variant of this exact class (set below for each public class): __new__ swaps to it.
    _dict_variant: ClassVar[type | None] = None
    # Attributes moved between numpy and device tensors (subclasses add theirs, e.g. the offline part).
    _stored_fields: ClassVar[tuple[str, ...]] = (
        "observations",
        "next_observations",
        "actions",
        "rewards",
        "dones",
        "timeouts",
    )

    def __new__(cls, *args: Any, **kwargs: Any) -> DeviceReplayBuffer:
        # SB3 calls replay_buffer_class(buffer_size, observation_space, ...): pick the Box or Dict base here so
        # that one class name works for both. Pickle calls cls.__new__(cls) with no args: no swap.
        obs_space = args[1] if len(args) > 1 else kwargs.get("observation_space")
        if isinstance(obs_space, spaces.Dict) and not issubclass(cls, DictReplayBuffer):
            variant = cls.__dict__.get("_dict_variant")
            if variant is None:
                raise TypeError(
                    f"{cls.__name__} has no Dict-observation variant. Fix: flatten the observations "
                    "(sb3_expo.wrappers.FlattenDictObservation) or define `_dict_variant` for your subclass."
                )
            cls = variant
        return super().__new__(cls)

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
    ):
        self.storage = check_storage(storage)
        is_dict = isinstance(observation_space, spaces.Dict)
        # Checked up front so that both storages give the same clear errors (SB3 has an assert for the Dict one).
        if optimize_memory_usage and is_dict:
            raise ValueError(
                "Dict observation spaces do not support optimize_memory_usage (neither does SB3's "
                "DictReplayBuffer). Fix: optimize_memory_usage=False."
            )
        if optimize_memory_usage and handle_timeout_termination:
            raise ValueError(
                "ReplayBuffer does not support optimize_memory_usage = True and handle_timeout_termination = True "
                "simultaneously (SB3 issue #934). Fix: pass handle_timeout_termination=False in "
                "replay_buffer_kwargs, or optimize_memory_usage=False."
            )
        tensors = uses_device_storage(storage, get_device(device))
        if not tensors:
            # Plain SB3 (numpy in host memory); the Dict variant's MRO makes this DictReplayBuffer.__init__.
            super().__init__(
                buffer_size,
                observation_space,
                action_space,
                device=device,
                n_envs=n_envs,
                optimize_memory_usage=optimize_memory_usage,
                handle_timeout_termination=handle_timeout_termination,
            )
        else:
            self._allocate_tensors(
                buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
                handle_timeout_termination,
            )
        self._tensor_storage = tensors
        self._staging: tuple[np.ndarray, list[np.ndarray], list[tuple[Any, ...]]] | None = None

    def _allocate_tensors(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str,
        n_envs: int,
        optimize_memory_usage: bool,
        handle_timeout_termination: bool,
    ) -> None:
        """SB3's ``ReplayBuffer.__init__`` / ``DictReplayBuffer.__init__`` with tensors instead of numpy arrays."""
        # BaseBuffer.__init__ only: spaces, obs_shape, action_dim, pos, full, device, n_envs (no numpy arrays).
        super(ReplayBuffer, self).__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        if isinstance(self.obs_shape, dict) != isinstance(self, DictReplayBuffer):
            raise TypeError(
                f"{type(self).__name__} got the observation space {observation_space}. Fix: build the buffer "
                "through DeviceReplayBuffer(...), which picks the Box or Dict variant from the space."
            )
        self.buffer_size = max(buffer_size // n_envs, 1)
        self.optimize_memory_usage = optimize_memory_usage
        self.handle_timeout_termination = handle_timeout_termination

        rows = (self.buffer_size, self.n_envs)
        if isinstance(self.observation_space, spaces.Dict):
            obs_specs: Any = {
                k: ((*rows, *shape), self.observation_space[k].dtype) for k, shape in self.obs_shape.items()
            }
        else:
            obs_specs = ((*rows, *self.obs_shape), self.observation_space.dtype)
        specs: dict[str, Any] = {"observations": obs_specs}
        if not optimize_memory_usage:
            # When optimizing memory, `observations` also holds the next observations (as in SB3).
            specs["next_observations"] = obs_specs
        specs["actions"] = ((*rows, self.action_dim), self._maybe_cast_dtype(self.action_space.dtype))
        for name in ("rewards", "dones", "timeouts"):
            specs[name] = (rows, np.float32)

        def nbytes(spec: tuple[tuple[int, ...], Any]) -> int:
            return int(np.prod(spec[0])) * np.dtype(spec[1]).itemsize

        total = sum(sum(map(nbytes, s.values())) if isinstance(s, dict) else nbytes(s) for s in specs.values())
        self._warn_if_too_big(total)

        def zeros(spec: tuple[tuple[int, ...], Any]) -> th.Tensor:
            return th.zeros(spec[0], dtype=torch_dtype(spec[1]), device=self.device)

        for name, spec in specs.items():
            setattr(self, name, _tree_map(zeros, spec))

    def _warn_if_too_big(self, nbytes: int) -> None:
        """Warn (like SB3) when the arrays will not fit in the free memory of the device they go to."""
        if self.device.type == "cuda":
            available = th.cuda.mem_get_info(self.device)[0]
        elif psutil is not None:
            available = psutil.virtual_memory().available
        else:  # pragma: no cover
            return
        if nbytes > available:
            warnings.warn(
                f"The replay buffer needs {nbytes / 1e9:.2f}GB but only {available / 1e9:.2f}GB is free on "
                f"{self.device}. Fix: a smaller buffer_size, or storage='host'."
            )

    # -- where the arrays live ------------------------------------------------------------------------------------

    @property
    def device(self) -> th.device:
        """The PyTorch device of the sampled tensors (and of the stored arrays when :attr:`tensor_storage`)."""
        return self._device

    @device.setter
    def device(self, device: th.device | str) -> None:
        # SB3's load_replay_buffer sets `replay_buffer.device = model.device`: move the stored arrays along.
        self._device = get_device(device)
        if "_tensor_storage" in self.__dict__:  # not during BaseBuffer.__init__ (nothing allocated yet)
            self._place_storage()

    @property
    def tensor_storage(self) -> bool:
        """True when the arrays are torch tensors on :attr:`device`, False when they are SB3's numpy arrays."""
        return self._tensor_storage

    def _to_storage(self, x: Stored) -> Stored:
        """An array (or dict of arrays) in this buffer's storage: a tensor on the device, or a numpy array."""
        if self._tensor_storage:
            return _tree_map(lambda a: _to_tensor(a, self.device), x)
        return _tree_map(_to_numpy, x)

    def _place_storage(self) -> None:
        """(Re)resolve ``storage`` for the current device and convert every stored array to match."""
        self._tensor_storage = uses_device_storage(self.storage, self.device)
        for name in self._stored_fields:
            if name in self.__dict__:
                setattr(self, name, self._to_storage(self.__dict__[name]))
        self._staging = None

    def __getstate__(self) -> dict[str, Any]:
        # numpy in the pickle: loading needs no GPU, and torch is not needed to read the arrays back.
        state = self.__dict__.copy()
        for name in self._stored_fields:
            if name in state:
                state[name] = _tree_map(_to_numpy, state[name])
        state["_staging"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "device" in state:  # pickled by a class without the `device` property (before DeviceReplayBuffer)
            state["_device"] = state.pop("device")
        state.setdefault("storage", "auto")
        self.__dict__.update(state)
        # A buffer saved from a GPU loads onto the CPU where there is none (load_replay_buffer then sets the device).
        self._device = get_device(self._device)
        self._place_storage()

    # -- adding ---------------------------------------------------------------------------------------------------

    def _obs_spaces(self) -> list[tuple[str | None, spaces.Space]]:
        if isinstance(self.observation_space, spaces.Dict):
            return list(self.observation_space.spaces.items())
        return [(None, self.observation_space)]

    def _build_staging(self) -> None:
        """Lay out one env step's transition in a single host byte buffer (numpy views) and map it to the arrays."""
        # (attribute, dict key, write at pos + 1 (optimize_memory_usage next obs), per-step shape), in add() order
        slots: list[tuple[str, str | None, bool]] = []
        for key, _ in self._obs_spaces():
            slots.append(("observations", key, False))
        for key, _ in self._obs_spaces():
            # optimize_memory_usage: the next observation goes to `observations` at pos + 1 (as in SB3)
            next_slot = ("observations", key, True) if self.optimize_memory_usage else ("next_observations", key, False)
            slots.append(next_slot)
        slots += [("actions", None, False), ("rewards", None, False), ("dones", None, False)]
        if self.handle_timeout_termination:
            slots.append(("timeouts", None, False))

        layout = []
        offset = 0
        for name, key, next_row in slots:
            target = getattr(self, name) if key is None else getattr(self, name)[key]
            shape = tuple(target.shape[1:])
            np_dtype = th.empty(0, dtype=target.dtype).numpy().dtype
            nbytes = int(np.prod(shape)) * np_dtype.itemsize
            layout.append((name, key, next_row, offset, nbytes, target.dtype, shape, np_dtype))
            offset += -(-nbytes // _ALIGN) * _ALIGN
        host = np.zeros(max(offset, _ALIGN), dtype=np.uint8)
        views = [host[off : off + n].view(dt).reshape(shape) for _, _, _, off, n, _, shape, dt in layout]
        self._staging = (host, views, layout)

    def add(
        self,
        obs: np.ndarray | dict[str, np.ndarray],
        next_obs: np.ndarray | dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """
        Add one env step (``n_envs`` transitions) at ``self.pos``, as SB3's ``add`` does.

        :param obs: observations, ``(n_envs, *obs_shape)`` (dict of such arrays for Dict spaces)
        :param next_obs: next observations, same layout
        :param action: actions, ``(n_envs, action_dim)``
        :param reward: rewards, ``(n_envs,)``
        :param done: dones, ``(n_envs,)``
        :param infos: one info dict per env (``TimeLimit.truncated`` is read when handling timeouts)
        """
        if not self._tensor_storage:
            super().add(obs, next_obs, action, reward, done, infos)  # type: ignore[arg-type]
            return
        if self._staging is None:
            self._build_staging()
        assert self._staging is not None
        host, views, layout = self._staging
        # Fill the staging views with numpy assignment: the same casting and broadcasting as SB3's
        # `self.observations[self.pos] = np.array(obs)`.
        values: list[Any] = []
        for o in (obs, next_obs):
            for key, space in self._obs_spaces():
                x = o if key is None else o[key]  # type: ignore[index]
                if isinstance(space, spaces.Discrete):  # numpy cannot broadcast (n_envs,) to (n_envs, 1)
                    x = np.asarray(x).reshape((self.n_envs, 1))
                values.append(x)
        # Reshape to handle multi-dim and discrete action spaces (SB3 GH #970 #1392)
        values += [np.asarray(action).reshape((self.n_envs, self.action_dim)), reward, done]
        if self.handle_timeout_termination:
            values.append([info.get("TimeLimit.truncated", False) for info in infos])
        for view, x in zip(views, values):
            view[...] = x
        # The one host->device copy of this env step (a no-op on the CPU); blocking, so the staging buffer can be
        # refilled at the next step.
        packed = th.from_numpy(host).to(self.device)
        for name, key, next_row, offset, nbytes, dtype, shape, _ in layout:
            target = getattr(self, name) if key is None else getattr(self, name)[key]
            row = (self.pos + 1) % self.buffer_size if next_row else self.pos
            target[row].copy_(packed[offset : offset + nbytes].view(dtype).view(shape))

        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    # -- sampling -------------------------------------------------------------------------------------------------

    def _normalized_obs(self, obs: th.Tensor | dict[str, th.Tensor], env: VecNormalize | None) -> Any:
        """SB3's ``_normalize_obs`` on device tensors: a host round trip when ``env`` normalizes, else a no-op."""
        if env is None:
            return obs
        normalized = self._normalize_obs(_tree_map(_to_numpy, obs), env)
        return _tree_map(self.to_torch, normalized)

    def _normalized_reward(self, reward: th.Tensor, env: VecNormalize | None) -> th.Tensor:
        """SB3's ``_normalize_reward`` on a device tensor (host round trip when ``env`` is given)."""
        if env is None:
            return reward
        return self.to_torch(self._normalize_reward(_to_numpy(reward), env))

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> ReplayBufferSamples | DictReplayBufferSamples:
        if not self._tensor_storage:
            return super()._get_samples(batch_inds, env=env)
        # Env indices drawn exactly like SB3, so a seeded run samples the same rows.
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        rows = [batch_inds * self.n_envs + env_indices]  # flat (step, env) row of a (buffer_size * n_envs, ...) view
        if self.optimize_memory_usage:
            rows.append(((batch_inds + 1) % self.buffer_size) * self.n_envs + env_indices)
        # One host->device copy of the indices; the gathers then run on the device.
        index = th.from_numpy(np.stack(rows).astype(np.int64, copy=False)).to(self.device)

        def take(arr: th.Tensor, i: int = 0) -> th.Tensor:
            return arr.flatten(0, 1)[index[i]]

        obs = _tree_map(take, self.observations)
        if self.optimize_memory_usage:
            next_obs = take(self.observations, 1)  # type: ignore[arg-type]
        else:
            next_obs = _tree_map(take, self.next_observations)
        # Only use dones that are not due to timeouts (timeouts stay 0 unless handle_timeout_termination)
        dones = (take(self.dones) * (1 - take(self.timeouts))).reshape(-1, 1)  # type: ignore[arg-type]
        rewards = self._normalized_reward(take(self.rewards).reshape(-1, 1), env)  # type: ignore[arg-type]
        samples_cls = DictReplayBufferSamples if isinstance(obs, dict) else ReplayBufferSamples
        return samples_cls(
            observations=self._normalized_obs(obs, env),
            actions=take(self.actions),  # type: ignore[arg-type]
            next_observations=self._normalized_obs(next_obs, env),
            dones=dones,
            rewards=rewards,
        )


class DictDeviceReplayBuffer(DeviceReplayBuffer, DictReplayBuffer):
    """Dict-observation variant of :class:`DeviceReplayBuffer` (picked automatically for Dict spaces)."""


DeviceReplayBuffer._dict_variant = DictDeviceReplayBuffer
