"""Offline data: Minari / robomimic loaders, the mixed replay buffers, env wrappers and the dataset writer."""

from __future__ import annotations

import json
import pickle
import time
import warnings

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import TQC
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_expo.datasets.controllers import NoisyController, mountain_car_bang_bang, pendulum_swingup
from sb3_expo.datasets.make_minari import episode_returns, main, make_minari_dataset
from sb3_expo.wrappers import (
    DictMinariReplayBuffer,
    FlattenDictObservation,
    MinariReplayBuffer,
    OfflineDataError,
    OfflineDataset,
    OfflineDatasetNotFoundError,
    OfflineReplayBuffer,
    RobomimicReplayBuffer,
    ShiftScaleReward,
    ClipActionToSpace,
    concat_robomimic_obs,
    flatten_dict_obs,
    load_minari_dataset,
    load_robomimic_dataset,
    offline_row_mask,
    transform_reward,
)

def tiny(**overrides):
    """Small, fast SB3 settings (a fresh dict each time: SB3 writes into policy_kwargs)."""
    kwargs = dict(policy_kwargs=dict(net_arch=[32, 32]), learning_starts=0, batch_size=32, seed=0, device="cpu")
    kwargs.update(overrides)
    return kwargs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------------------------
# A tiny env whose observations/rewards encode (episode, step), so rows can be checked exactly.
# ------------------------------------------------------------------------------------------------------------------


class CounterEnv(gym.Env):
    """obs = [episode, t], reward = 100 * episode + t (t = step after the action), asymmetric action bounds.

    Episodes with an even reset seed terminate at t == 3; others run until the TimeLimit (5) truncates them.
    ``nan_at``: (episode, t) whose observation is NaN. ``dict_obs``: return {"pos": [episode], "vel": [t]}.
    """

    def __init__(self, nan_at=None, nan_reward_at=None, dict_obs=False):
        self.dict_obs = dict_obs
        if dict_obs:
            self.observation_space = spaces.Dict(
                {"pos": spaces.Box(-np.inf, np.inf, (1,), np.float32), "vel": spaces.Box(-np.inf, np.inf, (1,), np.float32)}
            )
        else:
            self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 4.0], np.float32))
        self.nan_at, self.nan_reward_at = nan_at, nan_reward_at

    def _obs(self):
        obs = np.array([self.episode, self.t], np.float32)
        if self.nan_at == (self.episode, self.t):
            obs[1] = np.nan
        if self.dict_obs:
            return {"pos": obs[:1], "vel": obs[1:]}
        return obs

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = int(seed), 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = 100.0 * self.episode + self.t
        if self.nan_reward_at == (self.episode, self.t):
            reward = float("inf")
        terminated = self.episode % 2 == 0 and self.t == 3
        return self._obs(), reward, terminated, False, {}


def counter_action(episode, t):
    """Scripted raw action of step t (inside [low, high] = [[-2, 0], [2, 4]])."""
    return np.array([-2.0 + t, 0.5 * episode], np.float32)


def write_counter_dataset(dataset_id, n_episodes=4, actions=counter_action, **env_kwargs):
    with warnings.catch_warnings():
        # DataCollector warns about NaN observations / out-of-space actions, which some tests write on purpose.
        warnings.simplefilter("ignore")
        env = minari.DataCollector(gym.wrappers.TimeLimit(CounterEnv(**env_kwargs), max_episode_steps=5))
        for ep in range(n_episodes):
            env.reset(seed=ep)
            t, done = 0, False
            while not done:
                _, _, terminated, truncated, _ = env.step(actions(ep, t))
                t, done = t + 1, terminated or truncated
        dataset = env.create_dataset(dataset_id=dataset_id, algorithm_name="scripted")
    env.close()
    return dataset


@pytest.fixture
def minari_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    return tmp_path


# ------------------------------------------------------------------------------------------------------------------
# Loading: alignment, timeouts vs terminals, action scaling
# ------------------------------------------------------------------------------------------------------------------


def test_minari_alignment_terminations_truncations_and_scaling(minari_tmp):
    write_counter_dataset("test/counter-v0", n_episodes=4)
    env = CounterEnv()
    ds = load_minari_dataset("test/counter-v0", env.action_space, env.observation_space)
    # episodes 0, 2 terminate after 3 steps; 1, 3 are truncated by the TimeLimit after 5
    assert len(ds) == 3 + 5 + 3 + 5
    np.testing.assert_array_equal(ds.episode_starts, [0, 3, 8, 11])
    assert ds.source == {"kind": "minari", "dataset_id": "test/counter-v0", "obs_keys": None, "n_episodes": 4}
    low, high = env.action_space.low, env.action_space.high
    for ep, start in enumerate(ds.episode_starts):
        n = 3 if ep % 2 == 0 else 5
        rows = slice(start, start + n)
        t = np.arange(n, dtype=np.float32)
        np.testing.assert_array_equal(ds.observations[rows], np.stack([np.full(n, ep), t], 1))
        np.testing.assert_array_equal(ds.next_observations[rows], np.stack([np.full(n, ep), t + 1], 1))
        np.testing.assert_array_equal(ds.rewards[rows], 100 * ep + t + 1)
        raw = np.stack([counter_action(ep, i) for i in range(n)])
        np.testing.assert_allclose(ds.actions[rows], 2 * (raw - low) / (high - low) - 1, atol=1e-6)
        # a timeout is a truncation, never a termination
        np.testing.assert_array_equal(ds.terminations[rows], [False] * (n - 1) + [ep % 2 == 0])
        np.testing.assert_array_equal(ds.truncations[rows], [False] * (n - 1) + [ep % 2 == 1])
    assert ds.actions.dtype == np.float32 and ds.observations.dtype == np.float32

    # actions are scaled exactly like SB3's policy.scale_action
    model = SAC("MlpPolicy", env, **tiny())
    raw_all = np.concatenate([np.stack([counter_action(ep, i) for i in range(3 if ep % 2 == 0 else 5)]) for ep in range(4)])
    np.testing.assert_array_equal(ds.actions, model.policy.scale_action(raw_all))

    # the buffer's dones are terminations only (timeouts bootstrap)
    buf = MinariReplayBuffer(10, env.observation_space, env.action_space, dataset_id="test/counter-v0")
    np.testing.assert_array_equal(buf.offline_dones, ds.terminations.astype(np.float32))
    np.random.seed(0)
    batch = buf.sample_offline(200)
    obs, nxt, dones = batch.observations.cpu().numpy(), batch.next_observations.cpu().numpy(), batch.dones.cpu().numpy()[:, 0]
    np.testing.assert_array_equal(nxt[:, 1], obs[:, 1] + 1)  # next obs is the next step of the same episode
    np.testing.assert_array_equal(dones, (obs[:, 0] % 2 == 0) & (obs[:, 1] == 2))
    np.testing.assert_array_equal(batch.rewards.cpu().numpy()[:, 0], 100 * obs[:, 0] + obs[:, 1] + 1)


def test_pendulum_dataset_and_cli(pendulum_dataset_id, minari_datasets_path, monkeypatch, tmp_path, capsys):
    ds = minari.load_dataset(pendulum_dataset_id)
    assert ds.total_episodes == 10 and ds.total_steps == 2000
    for ep in ds.iterate_episodes():  # Pendulum's TimeLimit cut: truncation, not termination
        assert not ep.terminations.any() and ep.truncations[-1] and ep.truncations.sum() == 1
    rets = episode_returns(ds)
    assert -1100 < rets.mean() < -300  # "medium": between random (~-1200) and the controller (~-145)

    # CLI, in its own Minari root; MountainCar demos reach the flag -> terminations
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    mean = main(["--env", "MountainCarContinuous-v0", "--episodes", "2", "--quality", "expert", "--dataset-id", "test/mc-v0"])
    assert "test/mc-v0: 2 episodes" in capsys.readouterr().out and mean > 80
    mc = minari.load_dataset("test/mc-v0")
    assert all(ep.terminations[-1] and not ep.truncations.any() for ep in mc.iterate_episodes())
    # idempotent: reused as is, or rewritten with overwrite=True
    assert make_minari_dataset("MountainCarContinuous-v0", "test/mc-v0", n_episodes=5).total_episodes == 2
    assert make_minari_dataset("MountainCarContinuous-v0", "test/mc-v0", n_episodes=1, overwrite=True).total_episodes == 1


def test_controllers():
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=3)
    total = 0.0
    for _ in range(200):
        obs, r, *_ = env.step(pendulum_swingup(obs))
        total += r
    assert total > -400  # the noise-free controller swings up and balances
    noisy = NoisyController(mountain_car_bang_bang, gym.make("MountainCarContinuous-v0").action_space, noise=5.0, seed=0)
    acts = np.array([noisy(np.array([0.0, 0.01])) for _ in range(100)])
    assert acts.min() >= -1 and acts.max() <= 1 and acts.dtype == np.float32


# ------------------------------------------------------------------------------------------------------------------
# Sampling: offline fraction, contiguous chunks, offline-only
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.29, 1 / 3, 0.5, 0.7, 1.0])
def test_offline_row_mask_every_chunk(fraction):
    n = 600
    cum = np.concatenate([[0], np.cumsum(offline_row_mask(n, fraction))])
    for b in (1, 2, 3, 7, 64, 256):
        counts = cum[b:] - cum[:-b]  # offline rows of every contiguous chunk of b rows
        assert counts.min() >= np.floor(fraction * b - 1e-9) and counts.max() <= np.ceil(fraction * b + 1e-9)


def _fill_online(buf, n, reward=1000.0):
    obs_dim = buf.obs_shape[0]
    for i in range(n):
        obs = np.full((1, obs_dim), 50.0 + i, np.float32)
        buf.add(obs, obs + 1, np.zeros((1, buf.action_dim), np.float32), np.array([reward]), np.array([0.0]), [{}])


def test_mixed_sampling_layout(pendulum_dataset_id):
    env = gym.make("Pendulum-v1")
    buf = MinariReplayBuffer(100, env.observation_space, env.action_space, dataset_id=pendulum_dataset_id)
    assert (buf.offline_size, buf.online_size, buf.offline_fraction) == (2000, 0, 0.5)
    # online part empty: offline rows only
    assert (buf.sample(64).rewards <= 0).all()
    _fill_online(buf, 20)
    assert buf.online_size == 20
    batch_size, gradient_steps = 32, 5
    batch = buf.sample(batch_size * gradient_steps)
    is_online = batch.rewards.cpu().numpy()[:, 0] == 1000.0
    np.testing.assert_array_equal(~is_online, offline_row_mask(batch_size * gradient_steps, 0.5))
    for chunk in np.split(is_online, gradient_steps):  # EXPO splits one sample into gradient_steps chunks
        assert chunk.sum() == batch_size // 2
    # online rows are consistent transitions
    obs, nxt = batch.observations.cpu().numpy()[is_online], batch.next_observations.cpu().numpy()[is_online]
    np.testing.assert_array_equal(nxt, obs + 1)
    assert (buf.sample_offline(128).rewards <= 0).all()

    buf.offline_fraction = 0.25
    is_online = buf.sample(256).rewards.cpu().numpy()[:, 0] == 1000.0
    assert (~is_online).sum() == 64
    buf.offline_fraction = 0.0
    assert (buf.sample(64).rewards == 1000.0).all()


def test_reward_shift_scale_matches_env_wrapper(pendulum_dataset_id):
    env = ShiftScaleReward(gym.make("Pendulum-v1"), shift=-1.0, scale=2.0)
    ds = load_minari_dataset(pendulum_dataset_id, env.action_space, env.observation_space)
    buf = MinariReplayBuffer(
        10,
        env.observation_space,
        env.action_space,
        device="cpu",  # numpy storage: on a CUDA machine "auto" would keep the offline arrays on the GPU
        dataset_id=pendulum_dataset_id,
        reward_shift=-1.0,
        reward_scale=2.0,
    )
    np.testing.assert_allclose(buf.offline_rewards, ds.rewards * 2.0 - 1.0, rtol=1e-6)
    env.reset(seed=0)
    _, r, *_ = env.step(np.zeros(1, np.float32))
    inner = gym.make("Pendulum-v1")
    inner.reset(seed=0)
    _, r_raw, *_ = inner.step(np.zeros(1, np.float32))
    assert r == pytest.approx(transform_reward(r_raw, -1.0, 2.0))


def test_vecnormalize_and_n_envs(pendulum_dataset_id):
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2), norm_reward=True)
    venv.reset()
    for _ in range(20):
        venv.step(np.random.uniform(-2, 2, (2, 1)).astype(np.float32))
    buf = MinariReplayBuffer(100, venv.observation_space, venv.action_space, n_envs=2, dataset_id=pendulum_dataset_id)
    np.random.seed(1)
    inds = np.random.randint(0, buf.offline_size, size=16)
    np.random.seed(1)
    batch = buf.sample_offline(16, env=venv)
    np.testing.assert_allclose(batch.observations.cpu().numpy(), venv.normalize_obs(buf.offline_observations[inds]), rtol=1e-5)
    np.testing.assert_allclose(
        batch.rewards.cpu().numpy()[:, 0], venv.normalize_reward(buf.offline_rewards[inds]), rtol=1e-5, atol=1e-6
    )
    obs = np.zeros((2, 3), np.float32)
    buf.add(obs, obs, np.zeros((2, 1), np.float32), np.ones(2), np.zeros(2), [{}, {}])
    assert buf.sample(10, env=venv).observations.shape == (10, 3)


# ------------------------------------------------------------------------------------------------------------------
# SB3 algorithms, Dict observations, pickling
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", [SAC, TD3, TQC])
def test_sb3_algorithms_train_with_buffer(algo, pendulum_dataset_id):
    kwargs = tiny()
    if algo is TQC:
        kwargs["policy_kwargs"] = dict(net_arch=[32, 32], n_critics=2, n_quantiles=5)
    model = algo(
        "MlpPolicy",
        "Pendulum-v1",
        replay_buffer_class=MinariReplayBuffer,
        replay_buffer_kwargs=dict(dataset_id=pendulum_dataset_id, offline_fraction=0.5),
        **kwargs,
    )
    assert isinstance(model.replay_buffer, MinariReplayBuffer) and model.replay_buffer.offline_size == 2000
    model.learn(150 if algo is SAC else 100)
    assert model.replay_buffer.online_size == model.num_timesteps
    assert np.isfinite(model.logger.name_to_value.get("train/critic_loss", 0.0))


def test_dict_observations_multiinputpolicy_and_flattening(minari_tmp):
    gymnasium_robotics = pytest.importorskip("gymnasium_robotics", reason="PointMaze needs gymnasium-robotics (the [mujoco] extra)")

    gym.register_envs(gymnasium_robotics)
    env = minari.DataCollector(gym.make("PointMaze_UMaze-v3", max_episode_steps=40))
    for ep in range(3):
        env.reset(seed=ep)
        done = False
        while not done:
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.create_dataset(dataset_id="test/pointmaze-random-v0", algorithm_name="random")
    env.close()
    episode = minari.load_dataset("test/pointmaze-random-v0")[1]

    # Dict observations for MultiInputPolicy: the class name picks the Dict base automatically
    model = SAC(
        "MultiInputPolicy",
        gym.make("PointMaze_UMaze-v3", max_episode_steps=40),
        replay_buffer_class=MinariReplayBuffer,
        replay_buffer_kwargs=dict(dataset_id="test/pointmaze-random-v0"),
        **tiny(),
    )
    buf = model.replay_buffer
    assert isinstance(buf, DictMinariReplayBuffer) and isinstance(buf, MinariReplayBuffer)
    assert isinstance(buf, DictReplayBuffer) and buf.offline_size == 120
    np.testing.assert_array_equal(buf.offline_observations["observation"][40:80], episode.observations["observation"][:-1])
    np.testing.assert_array_equal(buf.offline_next_observations["achieved_goal"][40:80], episode.observations["achieved_goal"][1:])
    model.learn(60)
    batch = buf.sample(20)
    assert set(batch.observations) == {"achieved_goal", "desired_goal", "observation"}
    assert batch.observations["observation"].shape == (20, 4) and batch.actions.shape == (20, 2)
    # pickled Dict buffer keeps its class and offline part
    clone = pickle.loads(pickle.dumps(buf))
    assert type(clone) is DictMinariReplayBuffer
    np.testing.assert_array_equal(clone.offline_observations["desired_goal"], buf.offline_observations["desired_goal"])

    # flattened: the env wrapper and the loader use the same function and key order
    keys = ["observation", "desired_goal"]
    flat_env = FlattenDictObservation(gym.make("PointMaze_UMaze-v3", max_episode_steps=40), keys=keys)
    assert flat_env.observation_space.shape == (6,)
    ds = load_minari_dataset(
        "test/pointmaze-random-v0", flat_env.action_space, flat_env.observation_space, obs_keys=keys
    )
    np.testing.assert_array_equal(ds.observations[40:80], flatten_dict_obs(episode.observations, keys)[:-1])
    raw_obs, _ = flat_env.env.reset(seed=0)
    flat_env.reset(seed=0)
    np.testing.assert_array_equal(flat_env.observation(raw_obs), np.concatenate([raw_obs["observation"], raw_obs["desired_goal"]]))
    MinariReplayBuffer(10, flat_env.observation_space, flat_env.action_space, dataset_id="test/pointmaze-random-v0", obs_keys=keys)
    with pytest.raises(OfflineDataError, match="Dict observations.*obs_keys"):
        MinariReplayBuffer(10, flat_env.observation_space, flat_env.action_space, dataset_id="test/pointmaze-random-v0")


def test_generic_offline_buffer_dict_counter_and_memory_options(minari_tmp):
    env = CounterEnv(dict_obs=True)
    write_counter_dataset("test/counter-dict-v0", n_episodes=2, dict_obs=True)
    ds = load_minari_dataset("test/counter-dict-v0", env.action_space, env.observation_space)
    np.testing.assert_array_equal(ds.observations["vel"][3:, 0], np.arange(5))  # episode 1: t = 0..4
    np.testing.assert_array_equal(ds.next_observations["vel"][3:, 0], np.arange(1, 6))
    buf = OfflineReplayBuffer(10, env.observation_space, env.action_space, dataset=ds)
    assert type(buf).__name__ == "DictOfflineReplayBuffer" and isinstance(buf, DictReplayBuffer)
    obs = {"pos": np.full((1, 1), 7.0, np.float32), "vel": np.zeros((1, 1), np.float32)}
    buf.add(obs, obs, np.zeros((1, 2), np.float32), np.array([-5.0]), np.array([0.0]), [{}])
    batch = buf.sample(8)
    np.testing.assert_array_equal(batch.observations["pos"][:, 0].cpu().numpy() == 7.0, ~offline_row_mask(8, 0.5))
    with pytest.raises(TypeError, match="no Dict-observation variant.*FlattenDictObservation"):
        RobomimicReplayBuffer(10, env.observation_space, env.action_space, path="x.hdf5", obs_keys=["pos"])

    # SB3's memory-efficient online storage (Box) still works under the mixed sampling
    flat = CounterEnv()
    write_counter_dataset("test/counter-flat-v0", n_episodes=2)
    buf = MinariReplayBuffer(
        8, flat.observation_space, flat.action_space, dataset_id="test/counter-flat-v0",
        optimize_memory_usage=True, handle_timeout_termination=False,
    )
    _fill_online(buf, 12)  # wraps around the 8-slot ring
    batch = buf.sample(64)
    online = batch.rewards.cpu().numpy()[:, 0] == 1000.0
    assert online.sum() == 32
    np.testing.assert_array_equal(batch.next_observations.cpu().numpy()[online], batch.observations.cpu().numpy()[online] + 1)


def test_save_load_replay_buffer_round_trip(pendulum_dataset_id, tmp_path):
    model = SAC(
        "MlpPolicy", "Pendulum-v1", replay_buffer_class=MinariReplayBuffer,
        replay_buffer_kwargs=dict(dataset_id=pendulum_dataset_id, reward_shift=-1.0), **tiny(),
    )
    model.learn(20)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    old = model.replay_buffer
    other = SAC("MlpPolicy", "Pendulum-v1", **tiny())
    other.load_replay_buffer(tmp_path / "buffer.pkl")
    new = other.replay_buffer
    assert type(new) is MinariReplayBuffer and new.offline_size == old.offline_size and new.online_size == 20
    assert new.offline_source["dataset_id"] == pendulum_dataset_id and new.reward_shift == -1.0
    for seed in (0, 1):
        np.random.seed(seed)
        a = old.sample_offline(64)
        np.random.seed(seed)
        b = new.sample_offline(64)
        for x, y in zip(a[:5], b[:5]):
            th.testing.assert_close(x, y, rtol=0, atol=0)
        np.random.seed(seed)
        a = old.sample(64)
        np.random.seed(seed)
        b = new.sample(64)
        th.testing.assert_close(a.observations, b.observations, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------------------
# robomimic HDF5
# ------------------------------------------------------------------------------------------------------------------


def write_robomimic_file(path, lengths=(4, 3, 5), nan=False, big_action=False):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        names = ["demo_0", "demo_1", "demo_10"]
        total = 0
        for name, n in zip(names, lengths):
            g = data.create_group(name)
            idx = int(name.split("_")[1])
            for group, offset in (("obs", 0), ("next_obs", 1)):
                t = np.arange(n, dtype=np.float64)[:, None] + offset
                g.create_dataset(f"{group}/object", data=np.hstack([np.full((n, 1), idx), t, t, t]))
                g.create_dataset(f"{group}/robot0_eef_pos", data=np.hstack([t, -t, np.full((n, 1), idx)]))
                g.create_dataset(f"{group}/robot0_gripper_qpos", data=np.zeros((n, 2)))
            actions = rng.uniform(-1, 1, (n, 7))
            if big_action and idx == 1:
                actions[2, 3] = 1.5
            g.create_dataset("actions", data=actions)
            rewards = np.zeros(n)
            rewards[-1] = 1.0
            if nan and idx == 10:
                rewards[2] = np.nan
            g.create_dataset("rewards", data=rewards)
            dones = np.zeros(n, dtype=np.int64)
            dones[-1] = 1 if idx != 1 else 0  # demo_1 ends without "done"
            g.create_dataset("dones", data=dones)
            g.attrs["num_samples"] = n
            total += n
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}})
        f.create_dataset("mask/train", data=np.array([b"demo_0", b"demo_10"]))


def test_robomimic_loader_and_buffer(tmp_path):
    path = tmp_path / "low_dim.hdf5"
    write_robomimic_file(path)
    keys = ["robot0_eef_pos", "object"]  # user order, not alphabetical
    ds = load_robomimic_dataset(path, keys)
    assert len(ds) == 12 and ds.observations.shape == (12, 7) and ds.observations.dtype == np.float32
    assert ds.source["env_args"]["env_name"] == "Lift" and ds.source["obs_keys"] == keys
    assert ds.source["episode_names"] == ["demo_0", "demo_1", "demo_10"]  # robomimic's numeric order
    with h5py.File(path, "r") as f:
        demo = f["data/demo_10"]
        expected = np.hstack([demo["obs/robot0_eef_pos"][()], demo["obs/object"][()]])
        expected_next = np.hstack([demo["next_obs/robot0_eef_pos"][()], demo["next_obs/object"][()]])
        np.testing.assert_array_equal(ds.observations[7:12], expected.astype(np.float32))
        np.testing.assert_array_equal(ds.next_observations[7:12], expected_next.astype(np.float32))
        np.testing.assert_allclose(ds.actions[7:12], demo["actions"][()], atol=1e-6)
        # the env side builds the same vector from one observation dict
        one = {k: demo["obs"][k][2] for k in ("object", "robot0_eef_pos", "robot0_gripper_qpos")}
        np.testing.assert_array_equal(concat_robomimic_obs(one, keys), ds.observations[9])
    # dones -> terminations; a demo ending without done is a truncation
    np.testing.assert_array_equal(np.flatnonzero(ds.terminations), [3, 11])
    np.testing.assert_array_equal(np.flatnonzero(ds.truncations), [6])
    assert load_robomimic_dataset(path, keys, done_mode="rewards").terminations.sum() == 3
    # filter key
    train = load_robomimic_dataset(path, keys, filter_key="train")
    assert len(train) == 9 and train.source["episode_names"] == ["demo_0", "demo_10"]

    obs_space = spaces.Box(-np.inf, np.inf, (7,), np.float32)
    act_space = spaces.Box(-1, 1, (7,), np.float32)
    buf = RobomimicReplayBuffer(10, obs_space, act_space, path=path, obs_keys=keys, filter_key="train")
    assert buf.offline_size == 9 and buf.sample(8).observations.shape == (8, 7)
    assert pickle.loads(pickle.dumps(buf)).offline_source["path"] == str(path)

    with pytest.raises(OfflineDataError, match=r"keys \['robot0_joint_pos'\] are not in demo_0/obs.*available"):
        load_robomimic_dataset(path, ["robot0_joint_pos"])
    with pytest.raises(OfflineDataError, match="no filter key 'valid'.*available: \\['train'\\]"):
        load_robomimic_dataset(path, keys, filter_key="valid")
    with pytest.raises(OfflineDataError, match=r"Observation shape mismatch.*\(7,\).*obs_keys=.*\(9,\)"):
        RobomimicReplayBuffer(10, spaces.Box(-1, 1, (9,)), act_space, path=path, obs_keys=keys)
    with pytest.raises(OfflineDatasetNotFoundError, match="does not exist"):
        load_robomimic_dataset(tmp_path / "missing.hdf5", keys)

    bad = tmp_path / "bad.hdf5"
    write_robomimic_file(bad, nan=True, big_action=True)
    with pytest.raises(OfflineDataError, match=r"'rewards' contains NaN/inf.*row 9 \(demo_10, step 2\)"):
        load_robomimic_dataset(bad, keys)
    with pytest.raises(OfflineDataError, match=r"1 of 7 actions lie outside.*row 6 \(demo_1, step 2\).*out_of_bounds='clip'"):
        load_robomimic_dataset(_without_demo_10(bad, tmp_path), keys)


def _without_demo_10(path, tmp_path):
    """Copy of a robomimic file without its NaN demo (demo_10)."""
    out = tmp_path / "no_nan.hdf5"
    with h5py.File(path, "r") as src, h5py.File(out, "w") as dst:
        src.copy("data/demo_0", dst, "data/demo_0")
        src.copy("data/demo_1", dst, "data/demo_1")
    return out


# ------------------------------------------------------------------------------------------------------------------
# Validation errors (each names the problem and the fix)
# ------------------------------------------------------------------------------------------------------------------


def test_space_mismatch_errors(pendulum_dataset_id, monkeypatch):
    env = gym.make("Pendulum-v1")
    with pytest.raises(OfflineDataError, match=r"Observation shape mismatch.*\(3,\).*\(4,\)"):
        MinariReplayBuffer(10, spaces.Box(-1, 1, (4,)), env.action_space, dataset_id=pendulum_dataset_id)
    with pytest.raises(OfflineDataError, match=r"Action shape mismatch.*\(1,\).*\(2,\)"):
        MinariReplayBuffer(10, env.observation_space, spaces.Box(-2, 2, (2,)), dataset_id=pendulum_dataset_id)
    with pytest.raises(OfflineDataError, match="Action bounds mismatch.*RescaleAction"):
        MinariReplayBuffer(10, env.observation_space, spaces.Box(-1, 1, (1,)), dataset_id=pendulum_dataset_id)
    with pytest.raises(OfflineDataError, match="The env has Dict observations.*FlattenDictObservation"):
        MinariReplayBuffer(
            10, spaces.Dict({"x": spaces.Box(-1, 1, (3,))}), env.action_space, dataset_id=pendulum_dataset_id
        )
    with pytest.raises(OfflineDataError, match="offline_fraction must be in"):
        MinariReplayBuffer(10, env.observation_space, env.action_space, dataset_id=pendulum_dataset_id, offline_fraction=1.5)

    # nothing is allocated when validation fails (the host storage: the allocation goes through ReplayBuffer.__init__)
    calls = []
    original = ReplayBuffer.__init__
    monkeypatch.setattr(ReplayBuffer, "__init__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    with pytest.raises(OfflineDataError):
        MinariReplayBuffer(10, env.observation_space, spaces.Box(-1, 1, (1,)), device="cpu", dataset_id=pendulum_dataset_id)
    assert calls == []
    MinariReplayBuffer(10, env.observation_space, env.action_space, device="cpu", dataset_id=pendulum_dataset_id)
    assert calls == [1]


def test_nan_inf_errors(minari_tmp):
    env = CounterEnv()
    write_counter_dataset("test/nan-obs-v0", n_episodes=3, nan_at=(1, 2))
    with pytest.raises(OfflineDataError, match=r"'observations' contains NaN/inf in 1 row.*row 5 \(episode 1, step 2\)"):
        load_minari_dataset("test/nan-obs-v0", env.action_space, env.observation_space)
    write_counter_dataset("test/inf-rew-v0", n_episodes=3, nan_reward_at=(2, 1))
    with pytest.raises(OfflineDataError, match=r"'rewards' contains NaN/inf.*row 8 \(episode 2, step 0\).*Fix"):
        MinariReplayBuffer(10, env.observation_space, env.action_space, dataset_id="test/inf-rew-v0")


def test_out_of_bounds_actions(minari_tmp):
    env = CounterEnv()

    def actions(ep, t):
        a = counter_action(ep, t)
        if (ep, t) in ((1, 1), (2, 0)):
            a[1] = 9.0  # above high=4
        return a

    write_counter_dataset("test/oob-v0", n_episodes=3, actions=actions)
    with pytest.raises(OfflineDataError, match=r"2 of 11 actions lie outside.*row 4 \(episode 1, step 1\).*out_of_bounds='clip'"):
        MinariReplayBuffer(10, env.observation_space, env.action_space, dataset_id="test/oob-v0")
    with pytest.warns(UserWarning, match="clipped 2 of 11 actions"):
        ds = load_minari_dataset("test/oob-v0", env.action_space, out_of_bounds="clip")
    assert ds.actions[4, 1] == 1.0 and ds.actions[8, 1] == 1.0 and np.abs(ds.actions).max() <= 1.0
    # an OfflineDataset built by hand must hold scaled actions
    bad = OfflineDataset(ds.observations, ds.next_observations, ds.actions * 3, ds.rewards, ds.terminations, ds.truncations)
    with pytest.raises(OfflineDataError, match=r"outside \[-1, 1\].*scale_action"):
        OfflineReplayBuffer(10, env.observation_space, env.action_space, dataset=bad)


def test_empty_and_missing_datasets(minari_tmp, monkeypatch):
    env = CounterEnv()
    collector = minari.DataCollector(gym.wrappers.TimeLimit(CounterEnv(), 5))
    collector.reset(seed=0)  # no step: the dataset holds no episode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collector.create_dataset(dataset_id="test/empty-v0", algorithm_name="none")
    with pytest.raises(OfflineDataError, match="is empty.*Fix"):
        MinariReplayBuffer(10, env.observation_space, env.action_space, dataset_id="test/empty-v0")
    empty = OfflineDataset(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), np.zeros(0, bool), np.zeros(0, bool))
    with pytest.raises(OfflineDataError, match="empty"):
        OfflineReplayBuffer(10, env.observation_space, env.action_space, dataset=empty)

    with pytest.raises(OfflineDatasetNotFoundError, match=r"not available locally.*minari download test/nope-v0.*MINARI_DATASETS_PATH"):
        MinariReplayBuffer(10, env.observation_space, env.action_space, dataset_id="test/nope-v0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OfflineDatasetNotFoundError, match="HF_HUB_OFFLINE=1 forbids downloading"):
        load_minari_dataset("test/nope-v0", download=True)
    assert time.perf_counter() - start < 5.0


def test_env_wrappers():
    env = ClipActionToSpace(gym.make("Pendulum-v1"))
    assert env.action_space == gym.make("Pendulum-v1").action_space  # bounds kept (gymnasium's ClipAction drops them)
    np.testing.assert_array_equal(env.action(np.array([5.0])), [2.0])
    with pytest.raises(TypeError, match="Dict observation space"):
        FlattenDictObservation(gym.make("Pendulum-v1"))
    wrapped = ShiftScaleReward(gym.make("MountainCarContinuous-v0"))  # default: reward - 1
    wrapped.reset(seed=0)
    assert wrapped.step(np.zeros(1, np.float32))[1] == pytest.approx(-1.0)
