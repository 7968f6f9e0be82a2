"""Portable checkpoints: a model saved with an offline buffer (MinariReplayBuffer, RobomimicReplayBuffer,
OfflineReplayBuffer) loads where its dataset is not available, for EXPO and for SB3's SAC.

Real Minari datasets written by minari's DataCollector (``pendulum_dataset_id`` of conftest.py); the "other machine"
is ``MINARI_DATASETS_PATH`` pointed at an empty folder (monkeypatch).
"""

from __future__ import annotations

import os
import warnings

import gymnasium as gym
import h5py
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_expo import EXPO, get_preset
from sb3_expo.buffers.offline import OfflineDatasetMissingWarning
from sb3_expo.wrappers import (
    MinariReplayBuffer,
    OfflineDataError,
    OfflineDatasetNotFoundError,
    OfflineReplayBuffer,
    RobomimicReplayBuffer,
    load_minari_dataset,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _missing_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, OfflineDatasetMissingWarning)]


def test_expo_loads_predicts_learns_without_its_dataset(tmp_path, monkeypatch, pendulum_dataset_id):
    model = EXPO(
        "MlpPolicy",
        "Pendulum-v1",
        replay_buffer_class=MinariReplayBuffer,
        replay_buffer_kwargs=dict(dataset_id=pendulum_dataset_id, offline_fraction=0.5),
        seed=0,
        device="cpu",
        **get_preset("tiny", learning_starts=20),
    )
    model.learn(30)
    model.save(tmp_path / "expo.zip")
    obs = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    home = os.environ["MINARI_DATASETS_PATH"]

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(empty))
    # a NEW model still refuses a missing dataset
    with pytest.raises(OfflineDatasetNotFoundError, match="not available locally"):
        EXPO("MlpPolicy", "Pendulum-v1", replay_buffer_class=MinariReplayBuffer,
             replay_buffer_kwargs=dict(dataset_id=pendulum_dataset_id), **get_preset("tiny"))

    # without an env: predict only, one warning naming the dataset and how to re-attach it
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loaded = EXPO.load(tmp_path / "expo.zip", device="cpu")
    messages = _missing_warnings(record)
    assert len(messages) == 1
    assert pendulum_dataset_id in messages[0] and str(empty) in messages[0]
    assert "model.replay_buffer.attach_offline()" in messages[0] and f"minari download {pendulum_dataset_id}" in messages[0]
    assert not loaded.replay_buffer.offline_attached and isinstance(loaded.replay_buffer, MinariReplayBuffer)
    action, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_allclose(action, expected, atol=1e-5)

    # with an env: evaluate and continue learning online (online rows only), pretrain() says what is missing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OfflineDatasetMissingWarning)
        loaded = EXPO.load(tmp_path / "expo.zip", env=gym.make("Pendulum-v1"), device="cpu")
    mean, _ = evaluate_policy(loaded, loaded.get_env(), n_eval_episodes=1)
    assert np.isfinite(mean)
    loaded.learn(10, reset_num_timesteps=False)
    assert loaded.num_timesteps == 40 and loaded.replay_buffer.online_size == 10
    batch = loaded.replay_buffer.sample(16)
    assert batch.observations.shape == (16, 3)
    with pytest.raises(OfflineDataError, match=f"no offline part.*{pendulum_dataset_id}.*attach_offline"):
        loaded.pretrain(1, progress_bar=False)

    # saved again (still the Minari buffer and kwargs) and loaded where the dataset is: attached, no warning
    loaded.save(tmp_path / "expo2.zip")
    monkeypatch.setenv("MINARI_DATASETS_PATH", home)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        again = EXPO.load(tmp_path / "expo2.zip", env=gym.make("Pendulum-v1"), device="cpu")
    assert not _missing_warnings(record)
    assert again.replay_buffer.offline_size == len(load_minari_dataset(pendulum_dataset_id))

    # re-attach on request once the dataset is there: the 50/50 batches and pretrain() are back
    loaded.replay_buffer.attach_offline()
    assert loaded.replay_buffer.offline_attached
    assert loaded.replay_buffer.offline_size == again.replay_buffer.offline_size
    loaded.pretrain(2, progress_bar=False)
    loaded.learn(5, reset_num_timesteps=False)


def test_sac_with_offline_buffers_loads_without_its_dataset(tmp_path, monkeypatch, pendulum_dataset_id):
    kwargs = dict(policy_kwargs=dict(net_arch=[16, 16]), learning_starts=0, batch_size=16, seed=0, device="cpu")
    sac = SAC("MlpPolicy", "Pendulum-v1", replay_buffer_class=MinariReplayBuffer,
              replay_buffer_kwargs=dict(dataset_id=pendulum_dataset_id), **kwargs)
    sac.learn(10)
    sac.save(tmp_path / "sac.zip")
    # OfflineReplayBuffer(dataset=...) saves its data in the zip: it loads anywhere as it is
    dataset = load_minari_dataset(pendulum_dataset_id)
    SAC("MlpPolicy", "Pendulum-v1", replay_buffer_class=OfflineReplayBuffer,
        replay_buffer_kwargs=dict(dataset=dataset), **kwargs).save(tmp_path / "sac_dataset.zip")

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "nowhere"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loaded = SAC.load(tmp_path / "sac.zip", env=gym.make("Pendulum-v1"), device="cpu")
    assert len(_missing_warnings(record)) == 1 and pendulum_dataset_id in _missing_warnings(record)[0]
    loaded.predict(np.zeros(3, dtype=np.float32))
    loaded.learn(10, reset_num_timesteps=False)
    assert loaded.replay_buffer.online_size == 10 and not loaded.replay_buffer.offline_attached

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with_data = SAC.load(tmp_path / "sac_dataset.zip", env=gym.make("Pendulum-v1"), device="cpu")
    assert not _missing_warnings(record) and with_data.replay_buffer.offline_size == len(dataset)


class _LowDimEnv(gym.Env):
    """7-dim observation (robot0_eef_pos + object of the test file), 7-dim action in [-1, 1]."""

    observation_space = spaces.Box(-np.inf, np.inf, (7,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(7, np.float32), {}

    def step(self, action):
        return np.zeros(7, np.float32), 0.0, False, False, {}


def _write_robomimic(path) -> None:
    with h5py.File(path, "w") as f:
        g = f.create_group("data/demo_0")
        for group in ("obs", "next_obs"):
            g.create_dataset(f"{group}/robot0_eef_pos", data=np.zeros((5, 3)))
            g.create_dataset(f"{group}/object", data=np.ones((5, 4)))
        g.create_dataset("actions", data=np.zeros((5, 7)))
        g.create_dataset("rewards", data=np.zeros(5))
        g.create_dataset("dones", data=np.zeros(5, dtype=np.int64))


def test_robomimic_buffer_loads_without_its_file(tmp_path):
    path = tmp_path / "low_dim.hdf5"
    _write_robomimic(path)
    keys = ["robot0_eef_pos", "object"]
    SAC("MlpPolicy", _LowDimEnv(), replay_buffer_class=RobomimicReplayBuffer,
        replay_buffer_kwargs=dict(path=str(path), obs_keys=keys), policy_kwargs=dict(net_arch=[8]),
        learning_starts=0, batch_size=4, device="cpu").save(tmp_path / "sac.zip")
    moved = tmp_path / "moved.hdf5"
    path.rename(moved)
    with pytest.raises(OfflineDatasetNotFoundError):  # a new buffer still refuses a missing file
        RobomimicReplayBuffer(10, _LowDimEnv.observation_space, _LowDimEnv.action_space, path=path, obs_keys=keys)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loaded = SAC.load(tmp_path / "sac.zip", env=_LowDimEnv(), device="cpu")
    messages = _missing_warnings(record)
    assert len(messages) == 1 and str(path) in messages[0] and "attach_offline(path=" in messages[0]
    loaded.learn(6)
    loaded.replay_buffer.attach_offline(path=moved)
    assert loaded.replay_buffer.offline_size == 5 and loaded.replay_buffer.path == str(moved)
