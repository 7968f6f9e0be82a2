"""DeviceReplayBuffer: tensor storage on the model's device, checked against SB3's numpy buffers row for row.

The tensor path is tested on the CPU with ``storage="device"``; the CUDA test runs only where a GPU is present.
"""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_expo import EXPO, get_preset
from sb3_expo.wrappers import (
    DeviceReplayBuffer,
    DictDeviceReplayBuffer,
    DictOfflineReplayBuffer,
    OfflineDataset,
    OfflineReplayBuffer,
)

BOX_OBS = spaces.Box(-10.0, 10.0, (3,), np.float32)
ACTIONS = spaces.Box(-1.0, 1.0, (2,), np.float64)  # float64: SB3 stores (and samples) float32 actions
DICT_OBS = spaces.Dict(
    {
        "pos": spaces.Box(-10.0, 10.0, (2,), np.float32),
        "pixels": spaces.Box(0, 255, (2, 2), np.uint8),
        "mode": spaces.Discrete(4),
    }
)

OFFLINE_DICT_OBS = spaces.Dict({k: s for k, s in DICT_OBS.spaces.items() if k != "mode"})  # Box keys only


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_obs(space: spaces.Space, n_envs: int, rng: np.random.Generator):
    if isinstance(space, spaces.Dict):
        return {k: random_obs(s, n_envs, rng) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Discrete):
        return rng.integers(0, space.n, size=(n_envs,))  # (n_envs,): add() must reshape it to (n_envs, 1)
    if np.issubdtype(space.dtype, np.integer):
        return rng.integers(0, 256, size=(n_envs, *space.shape)).astype(space.dtype)
    return rng.normal(size=(n_envs, *space.shape)).astype(np.float64)  # float64 in: cast to the space dtype


def copy_obs(obs):
    # SB3's DictReplayBuffer.add reshapes Discrete entries in place: give each buffer its own dict.
    return {k: v.copy() for k, v in obs.items()} if isinstance(obs, dict) else obs.copy()


def fill(buffers, obs_space, n_envs: int, n_steps: int, seed: int = 0) -> None:
    """Add the same random transitions (dones, and timeouts in the infos) to every buffer."""
    rng = np.random.default_rng(seed)
    for _ in range(n_steps):
        obs, next_obs = random_obs(obs_space, n_envs, rng), random_obs(obs_space, n_envs, rng)
        action = rng.uniform(-1, 1, size=(n_envs, buffers[0].action_dim))
        reward = rng.normal(size=n_envs)  # float64 in: stored as float32
        done = rng.random(n_envs) < 0.3
        infos = [{"TimeLimit.truncated": bool(d and rng.random() < 0.5)} for d in done]
        for buf in buffers:
            buf.add(copy_obs(obs), copy_obs(next_obs), action.copy(), reward.copy(), done.copy(), infos)


def assert_same_samples(a, b) -> None:
    """Same fields, dtypes, shapes and values (dict observations key by key)."""
    assert type(a).__name__ == type(b).__name__
    for x, y in zip(a, b, strict=True):
        if x is None:  # e.g. SB3's optional `discounts` (n-step returns)
            assert y is None
        elif isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
                assert th.equal(x[k].cpu(), y[k].cpu()), k
        else:
            assert x.dtype == y.dtype and x.shape == y.shape
            assert th.equal(x.cpu(), y.cpu())


def assert_same_draws(a, b, batch_size: int = 64, seeds=(0, 1, 2), env=None, method: str = "sample") -> None:
    for seed in seeds:
        np.random.seed(seed)
        x = getattr(a, method)(batch_size, env=env)
        np.random.seed(seed)
        y = getattr(b, method)(batch_size, env=env)
        assert_same_samples(x, y)


def to_numpy(x):
    return {k: v.cpu().numpy() for k, v in x.items()} if isinstance(x, dict) else x.cpu().numpy()


# ------------------------------------------------------------------------------------------------------------------
# (a) Box observations vs SB3's ReplayBuffer
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obs_space, n_envs, optimize_memory_usage, handle_timeout_termination",
    [
        (BOX_OBS, 2, False, True),  # n_envs=2, timeouts
        (BOX_OBS, 1, False, False),  # timeouts ignored
        (BOX_OBS, 1, True, False),  # memory-efficient variant: next obs at pos + 1
        (spaces.Box(0, 255, (2, 3), np.uint8), 2, False, True),  # uint8 stays uint8
        (spaces.Discrete(5), 2, False, True),  # int64 (n_envs,) observations reshaped to (n_envs, 1)
    ],
)
def test_box_buffer_matches_sb3(obs_space, n_envs, optimize_memory_usage, handle_timeout_termination):
    kwargs = dict(
        device="cpu", n_envs=n_envs, optimize_memory_usage=optimize_memory_usage,
        handle_timeout_termination=handle_timeout_termination,
    )
    ref = ReplayBuffer(14, obs_space, ACTIONS, **kwargs)
    buf = DeviceReplayBuffer(14, obs_space, ACTIONS, storage="device", **kwargs)
    assert type(buf) is DeviceReplayBuffer and buf.tensor_storage
    assert isinstance(buf.observations, th.Tensor) and buf.observations.dtype == th.from_numpy(ref.observations).dtype
    for seed, n_steps in enumerate((3, 8, 12)):  # 3 steps: partly filled; 11, 23: wrapped around 14 // n_envs rows
        fill([ref, buf], obs_space, n_envs, n_steps, seed=seed)
        assert (buf.pos, buf.full, buf.size()) == (ref.pos, ref.full, ref.size())
        for name in ("observations", "actions", "rewards", "dones", "timeouts"):
            np.testing.assert_array_equal(getattr(buf, name).cpu().numpy(), getattr(ref, name), err_msg=name)
            assert getattr(buf, name).cpu().numpy().dtype == getattr(ref, name).dtype, name
        if not optimize_memory_usage:
            np.testing.assert_array_equal(buf.next_observations.cpu().numpy(), ref.next_observations)
        assert_same_draws(ref, buf)
    # the dones of sampled timeout rows are zeroed (only when timeouts are handled)
    assert ref.timeouts.any() == handle_timeout_termination


def test_vecnormalize_samples_match_sb3():
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2), norm_reward=True)
    venv.reset()
    for _ in range(20):
        venv.step(np.random.uniform(-2, 2, (2, 1)).astype(np.float32))
    ref = ReplayBuffer(20, venv.observation_space, venv.action_space, device="cpu", n_envs=2)
    buf = DeviceReplayBuffer(20, venv.observation_space, venv.action_space, device="cpu", n_envs=2, storage="device")
    fill([ref, buf], venv.observation_space, 2, 8)
    assert_same_draws(ref, buf, env=venv)


def test_storage_choices_and_errors():
    # "auto" is numpy on the CPU: plain SB3
    auto = DeviceReplayBuffer(10, BOX_OBS, ACTIONS, device="cpu")
    assert auto.storage == "auto" and not auto.tensor_storage and isinstance(auto.observations, np.ndarray)
    host = DeviceReplayBuffer(10, BOX_OBS, ACTIONS, device="cpu", storage="host")
    assert isinstance(host.actions, np.ndarray) and host.actions.dtype == np.float32
    ref = ReplayBuffer(10, BOX_OBS, ACTIONS, device="cpu")
    fill([ref, host], BOX_OBS, 1, 13)
    assert_same_draws(ref, host)
    # (e) a bad value names the choices, for the online and the offline buffers
    with pytest.raises(ValueError, match="'auto', 'device', 'host'.*'gpu'"):
        DeviceReplayBuffer(10, BOX_OBS, ACTIONS, device="cpu", storage="gpu")
    with pytest.raises(ValueError, match="'auto', 'device', 'host'"):
        OfflineReplayBuffer(10, BOX_OBS, ACTIONS, device="cpu", storage="cuda", dataset=make_dataset(BOX_OBS, 10))
    # SB3's incompatible options: clear ValueErrors naming the fix, for both storages
    for storage in ("device", "host"):
        with pytest.raises(ValueError, match="handle_timeout_termination=False"):
            DeviceReplayBuffer(10, BOX_OBS, ACTIONS, device="cpu", optimize_memory_usage=True, storage=storage)
        with pytest.raises(ValueError, match="Fix: optimize_memory_usage=False"):
            DeviceReplayBuffer(
                10, DICT_OBS, ACTIONS, device="cpu", optimize_memory_usage=True, handle_timeout_termination=False,
                storage=storage,
            )


def test_device_setter_moves_storage_and_pickles_hold_numpy():
    buf = DeviceReplayBuffer(10, BOX_OBS, ACTIONS, device="cpu", storage="device")
    fill([buf], BOX_OBS, 1, 6)
    state = buf.__getstate__()
    assert isinstance(state["observations"], np.ndarray) and state["_staging"] is None
    clone = pickle.loads(pickle.dumps(buf))
    assert clone.tensor_storage and isinstance(clone.observations, th.Tensor)
    assert_same_draws(buf, clone)
    clone.add(np.zeros(3), np.ones(3), np.zeros(2), np.ones(1), np.zeros(1), [{}])  # staging rebuilt after load
    assert clone.pos == 7 and th.equal(clone.next_observations[6, 0], th.ones(3))
    # "auto" follows the device: numpy on the CPU (and tensors on CUDA, see the CUDA test)
    auto = pickle.loads(pickle.dumps(buf))
    auto.storage = "auto"
    auto.device = "cpu"
    assert not auto.tensor_storage and isinstance(auto.observations, np.ndarray)
    assert_same_draws(buf, auto)

    # a buffer pickled before DeviceReplayBuffer existed (plain `device` attribute, no `storage`) still loads
    old = buf.__getstate__()
    old["device"] = old.pop("_device")
    for key in ("storage", "_tensor_storage", "_staging"):
        del old[key]
    legacy = DeviceReplayBuffer.__new__(DeviceReplayBuffer)
    legacy.__setstate__(old)
    assert legacy.device == th.device("cpu") and legacy.storage == "auto" and not legacy.tensor_storage
    assert_same_draws(buf, legacy)


# ------------------------------------------------------------------------------------------------------------------
# (b) Dict observations vs SB3's DictReplayBuffer
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_envs, handle_timeout_termination", [(2, True), (1, False)])
def test_dict_buffer_matches_sb3(n_envs, handle_timeout_termination):
    kwargs = dict(device="cpu", n_envs=n_envs, handle_timeout_termination=handle_timeout_termination)
    ref = DictReplayBuffer(12, DICT_OBS, ACTIONS, **kwargs)
    buf = DeviceReplayBuffer(12, DICT_OBS, ACTIONS, storage="device", **kwargs)  # one class name for Box and Dict
    assert type(buf) is DictDeviceReplayBuffer and isinstance(buf, DictReplayBuffer) and buf.tensor_storage
    assert buf.observations["pixels"].dtype == th.uint8 and buf.observations["mode"].dtype == th.int64
    fill([ref, buf], DICT_OBS, n_envs, 4)
    assert_same_draws(ref, buf)
    fill([ref, buf], DICT_OBS, n_envs, 15, seed=1)  # wraps around
    assert (buf.pos, buf.full) == (ref.pos, ref.full)
    for key in DICT_OBS.spaces:
        np.testing.assert_array_equal(buf.observations[key].cpu().numpy(), ref.observations[key])
        np.testing.assert_array_equal(buf.next_observations[key].cpu().numpy(), ref.next_observations[key])
    assert_same_draws(ref, buf)
    clone = pickle.loads(pickle.dumps(buf))
    assert type(clone) is DictDeviceReplayBuffer
    assert_same_draws(ref, clone)


# ------------------------------------------------------------------------------------------------------------------
# (c) offline buffers: tensor storage samples the same rows as numpy storage
# ------------------------------------------------------------------------------------------------------------------


def make_dataset(obs_space: spaces.Space, n: int, seed: int = 0) -> OfflineDataset:
    rng = np.random.default_rng(seed)

    def observations():
        if isinstance(obs_space, spaces.Dict):
            return {k: observations_of(s) for k, s in obs_space.spaces.items()}
        return observations_of(obs_space)

    def observations_of(space):
        if isinstance(space, spaces.Discrete):
            return rng.integers(0, space.n, size=n)
        if np.issubdtype(space.dtype, np.integer):
            return rng.integers(0, 256, size=(n, *space.shape)).astype(space.dtype)
        return rng.uniform(-5, 5, size=(n, *space.shape)).astype(np.float32)

    terminations = rng.random(n) < 0.2
    return OfflineDataset(
        observations=observations(),
        next_observations=observations(),
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminations=terminations,
        truncations=~terminations & (rng.random(n) < 0.2),
    )


@pytest.mark.parametrize("obs_space", [BOX_OBS, OFFLINE_DICT_OBS], ids=["box", "dict"])
def test_offline_buffer_device_storage_samples_same_rows(obs_space):
    ds = make_dataset(obs_space, 50)
    kwargs = dict(device="cpu", n_envs=2, dataset=ds, offline_fraction=0.4, reward_shift=-1.0)
    host = OfflineReplayBuffer(16, obs_space, ACTIONS, storage="host", **kwargs)
    dev = OfflineReplayBuffer(16, obs_space, ACTIONS, storage="device", **kwargs)
    dict_obs = isinstance(obs_space, spaces.Dict)
    assert isinstance(dev, DictOfflineReplayBuffer) == dict_obs and isinstance(dev, DeviceReplayBuffer)
    assert not host.tensor_storage and dev.tensor_storage
    offline_obs = dev.offline_observations["pos"] if dict_obs else dev.offline_observations
    assert isinstance(offline_obs, th.Tensor) and isinstance(dev.offline_actions, th.Tensor)
    assert isinstance(dev.offline_truncations, np.ndarray)  # never sampled: stays numpy
    np.testing.assert_array_equal(dev.offline_rewards.cpu().numpy(), host.offline_rewards)
    # only offline rows while the online part is empty, then mixed batches
    assert_same_draws(host, dev, method="sample")
    fill([host, dev], obs_space, 2, 11)  # wraps around the 8 rows per env
    assert_same_draws(host, dev, method="sample")
    assert_same_draws(host, dev, method="sample_offline")
    clone = pickle.loads(pickle.dumps(dev))
    assert type(clone) is type(dev) and clone.tensor_storage
    assert_same_draws(host, clone, method="sample")


def test_offline_vecnormalize_round_trip_matches_host():
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), norm_reward=True)
    venv.reset()
    for _ in range(20):
        venv.step(np.random.uniform(-2, 2, (1, 1)).astype(np.float32))
    obs_space, act_space = venv.observation_space, venv.action_space
    ds = make_dataset(obs_space, 40)
    ds.actions = ds.actions[:, :1]
    host = OfflineReplayBuffer(10, obs_space, act_space, device="cpu", storage="host", dataset=ds)
    dev = OfflineReplayBuffer(10, obs_space, act_space, device="cpu", storage="device", dataset=ds)
    fill([host, dev], obs_space, 1, 5)
    assert_same_draws(host, dev, env=venv)
    assert_same_draws(host, dev, env=venv, method="sample_offline")


# ------------------------------------------------------------------------------------------------------------------
# (d) EXPO trains with it, the same as with SB3's buffer, and save/load_replay_buffer round-trips
# ------------------------------------------------------------------------------------------------------------------


def test_expo_trains_with_device_buffer_and_replay_buffer_round_trips(tmp_path):
    def make(**kwargs):
        return EXPO("MlpPolicy", "Pendulum-v1", seed=0, **get_preset("tiny", learning_starts=20), **kwargs)

    device_kwargs = dict(replay_buffer_class=DeviceReplayBuffer, replay_buffer_kwargs=dict(storage="device"))
    model = make(**device_kwargs).learn(40)
    buf = model.replay_buffer
    assert type(buf) is DeviceReplayBuffer and buf.tensor_storage and buf.size() == 40
    # same seeded run as with SB3's numpy buffer: the same rows were drawn, so the same parameters came out
    reference = make().learn(40)
    np.testing.assert_array_equal(buf.observations.cpu().numpy(), reference.replay_buffer.observations)
    for (name, p), q in zip(model.policy.state_dict().items(), reference.policy.state_dict().values()):
        assert th.equal(p, q), name

    model.save_replay_buffer(tmp_path / "buffer.pkl")
    other = make()
    other.load_replay_buffer(tmp_path / "buffer.pkl")
    loaded = other.replay_buffer
    assert type(loaded) is DeviceReplayBuffer and loaded.tensor_storage and loaded.size() == 40
    assert loaded.device == other.device and loaded.observations.device.type == other.device.type
    assert_same_draws(buf, loaded, batch_size=32)
    other.learn(10, reset_num_timesteps=False)  # training goes on with the loaded buffer
    assert loaded.size() == 50


# ------------------------------------------------------------------------------------------------------------------
# (f) CUDA: "auto" keeps the arrays and the samples on the GPU
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_auto_storage_samples_on_gpu():
    ref = ReplayBuffer(20, BOX_OBS, ACTIONS, device="cuda", n_envs=2)
    buf = DeviceReplayBuffer(20, BOX_OBS, ACTIONS, device="cuda", n_envs=2)  # storage="auto"
    assert buf.tensor_storage
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        assert getattr(buf, name).is_cuda, name
    fill([ref, buf], BOX_OBS, 2, 13)
    np.random.seed(0)
    batch = buf.sample(64)
    assert all(x.is_cuda for x in batch if x is not None)  # discounts: None without n-step returns
    assert_same_draws(ref, buf)

    dict_buf = DeviceReplayBuffer(20, DICT_OBS, ACTIONS, device="cuda")
    assert all(v.is_cuda for v in dict_buf.observations.values())
    fill([dict_buf], DICT_OBS, 1, 5)
    assert all(v.is_cuda for v in dict_buf.sample(8).observations.values())

    ds = make_dataset(BOX_OBS, 30)
    off = OfflineReplayBuffer(20, BOX_OBS, ACTIONS, device="cuda", dataset=ds)
    host = OfflineReplayBuffer(20, BOX_OBS, ACTIONS, device="cuda", storage="host", dataset=ds)
    assert off.tensor_storage and off.offline_observations.is_cuda and off.offline_rewards.is_cuda
    fill([off, host], BOX_OBS, 1, 5)
    assert all(x.is_cuda for x in off.sample(16) if x is not None)
    assert_same_draws(host, off)

    # moved to the CPU ("auto": numpy there) and back, as load_replay_buffer does
    clone = pickle.loads(pickle.dumps(buf))
    assert clone.observations.is_cuda
    clone.device = "cpu"
    assert isinstance(clone.observations, np.ndarray)
    clone.device = "cuda"
    assert clone.observations.is_cuda
    assert_same_draws(ref, clone)
