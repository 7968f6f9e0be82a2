"""Bad input and faults: every class gives a clear error that names the problem, or a documented behaviour; nothing
that was saved is lost when a save fails partway.

The failures are real ones (an attribute that cannot be pickled, a write into a read-only folder), not mocks.
"""

from __future__ import annotations

import os
import pathlib
import threading

import numpy as np
import pytest

from sb3_expo import EXPO, get_preset
from sb3_expo.utils.atomic_io import atomic_path


def tiny(**overrides):
    return get_preset("tiny", **overrides)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> EXPO:
    """A tiny model with some transitions in its buffer (no training: learning_starts is above the steps)."""
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **tiny(learning_starts=1000))
    model.learn(30)
    return model


def _leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# ---------------------------------------------------------------- atomic writes
def test_failed_save_keeps_the_previous_checkpoint(tmp_path, trained):
    path = tmp_path / "model.zip"
    trained.save(path)
    good = path.read_bytes()
    trained.unpicklable = threading.Lock()  # SB3 cloudpickles unknown attributes: this fails after the file opened
    try:
        with pytest.raises(TypeError, match="pickle"):
            trained.save(path)
    finally:
        del trained.unpicklable
    assert path.read_bytes() == good
    assert _leftovers(tmp_path) == []
    assert EXPO.load(path).num_timesteps == trained.num_timesteps


def test_save_adds_the_zip_suffix_and_overwrites_atomically(tmp_path, trained):
    trained.save(tmp_path / "model")  # SB3 semantics: ".zip" added to a name without a suffix
    assert (tmp_path / "model.zip").is_file()
    first = (tmp_path / "model.zip").stat().st_ino
    trained.save(str(tmp_path / "model"))
    assert (tmp_path / "model.zip").stat().st_ino != first  # a new file renamed into place, not rewritten in place
    assert _leftovers(tmp_path) == []
    assert EXPO.load(tmp_path / "model").num_timesteps == trained.num_timesteps
    trained.save(tmp_path / "sub" / "dir" / "m.zip")  # missing folders are created, as SB3 does
    assert (tmp_path / "sub" / "dir" / "m.zip").is_file()


def test_failed_replay_buffer_save_keeps_the_previous_file(tmp_path, trained):
    path = tmp_path / "buffer.pkl"
    trained.save_replay_buffer(path)
    good = path.read_bytes()
    trained.replay_buffer.unpicklable = threading.Lock()
    try:
        with pytest.raises(TypeError, match="pickle"):
            trained.save_replay_buffer(path)
    finally:
        del trained.replay_buffer.unpicklable
    assert path.read_bytes() == good
    assert _leftovers(tmp_path) == []
    trained.save_replay_buffer(tmp_path / "buffer2")  # ".pkl" added, as SB3 does
    assert (tmp_path / "buffer2.pkl").is_file()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_save_into_a_read_only_folder_fails_and_keeps_the_file(tmp_path, trained):
    path = tmp_path / "model.zip"
    trained.save(path)
    good = path.read_bytes()
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            trained.save(path)
    finally:
        tmp_path.chmod(0o755)
    assert path.read_bytes() == good


def test_atomic_path_keeps_the_destination_on_error_and_keeps_its_permissions(tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    dest.chmod(0o640)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and not tmp.exists()
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert dest.stat().st_mode & 0o777 == 0o640
    with pytest.raises(FileNotFoundError, match="did not create"):
        with atomic_path(tmp_path / "g.bin"):
            pass
    assert not (tmp_path / "g.bin").exists()


def test_checkpoint_callback_files_are_written_atomically(tmp_path):
    from stable_baselines3.common.callbacks import CheckpointCallback

    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **tiny(learning_starts=1000))
    cb = CheckpointCallback(20, str(tmp_path), name_prefix="m", save_replay_buffer=True)
    model.learn(40, callback=cb)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m_20_steps.zip", "m_40_steps.zip", "m_replay_buffer_20_steps.pkl", "m_replay_buffer_40_steps.pkl"]
    loaded = EXPO.load(tmp_path / "m_40_steps.zip")
    loaded.load_replay_buffer(tmp_path / "m_replay_buffer_40_steps.pkl")
    # SB3 calls the callback before it stores the step's transition: the buffer holds the 39 before it
    assert loaded.num_timesteps == 40 and loaded.replay_buffer.size() == 39
    np.testing.assert_array_equal(loaded.replay_buffer.actions[:39], model.replay_buffer.actions[:39])


def test_make_minari_overwrite_keeps_the_old_dataset_when_the_rollout_fails(tmp_path, monkeypatch):
    import minari

    from sb3_expo.datasets.make_minari import make_minari_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    make_minari_dataset("Pendulum-v1", "sb3-expo/atomic-test-v0", n_episodes=1, seed=0)

    def broken_controller(obs):
        raise RuntimeError("controller failed")

    with pytest.raises(RuntimeError, match="controller failed"):
        make_minari_dataset(
            "Pendulum-v1", "sb3-expo/atomic-test-v0", n_episodes=1, controller=broken_controller, overwrite=True
        )
    assert minari.load_dataset("sb3-expo/atomic-test-v0").total_episodes == 1


# ---------------------------------------------------------------- hyperparameter ranges
BAD_HYPERPARAMETERS = [
    ("gamma", 1.5, r"gamma=1\.5: must be a discount in \(0, 1\]"),
    ("gamma", 0.0, r"gamma=0\.0: must be a discount in \(0, 1\]"),
    ("gamma", float("nan"), r"gamma=nan"),
    ("tau", -0.5, r"tau=-0\.5: must be a Polyak rate in \[0, 1\]"),
    ("tau", 2.0, r"tau=2\.0"),
    ("buffer_size", 0, r"buffer_size=0: must be an int >= 1"),
    ("buffer_size", 1e6, r"buffer_size=1000000\.0: must be an int >= 1"),
    ("batch_size", 0, r"batch_size=0: must be an int >= 1"),
    ("batch_size", -4, r"batch_size=-4: must be an int >= 1"),
    ("learning_starts", -1, r"learning_starts=-1: must be an int >= 0"),
    ("gradient_steps", -2, r"gradient_steps=-2: must be an int >= 0 .* or -1"),
    ("train_freq", 0, r"train_freq=0: must be an int >= 1"),
    ("train_freq", (2, "epoch"), r"train_freq=\(2, 'epoch'\)"),
    ("learning_rate", -3e-4, r"learning_rate=-0\.0003: must be a float >= 0 or a schedule"),
    ("base_learning_rate", 0.0, r"base_learning_rate=0\.0: must be a float > 0"),
    ("temperature_learning_rate", -1.0, r"temperature_learning_rate=-1\.0"),
    ("initial_temperature", 0.0, r"initial_temperature=0\.0"),
    ("base_weight_decay", -1e-4, r"base_weight_decay=-0\.0001: must be a float >= 0"),
    ("base_ema_tau", 1.5, r"base_ema_tau=1\.5: must be an EMA rate in \[0, 1\]"),
    ("base_lr_decay_steps", -10, r"base_lr_decay_steps=-10"),
    ("target_entropy", "high", r"target_entropy='high': must be 'auto' or a finite float"),
    ("candidate_chunk_rows", -1, r"candidate_chunk_rows=-1"),
    ("beta_min", 0.0, r"beta_min=0\.0: must be a float > 0"),
    ("beta_max", 0.01, r"beta_max=0\.01: must be a float >= beta_min"),
    ("sample_temperature", -1.0, r"sample_temperature=-1\.0"),
]


@pytest.mark.parametrize("name,value,message", BAD_HYPERPARAMETERS, ids=[f"{n}={v}" for n, v, _ in BAD_HYPERPARAMETERS])
def test_out_of_range_hyperparameters_are_rejected_by_name(name, value, message):
    from sb3_expo.expo import HyperparameterError

    with pytest.raises(HyperparameterError, match=message) as info:
        EXPO("MlpPolicy", "Pendulum-v1", **tiny(**{name: value}))
    assert "Fix:" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_all_bad_hyperparameters_are_reported_at_once():
    with pytest.raises(ValueError, match=r"hyperparameters:\n  gamma=1\.5.*\n  tau=-0\.5.*\n  batch_size=0"):
        EXPO("MlpPolicy", "Pendulum-v1", **tiny(gamma=1.5, tau=-0.5, batch_size=0))


def test_edge_values_are_accepted():
    model = EXPO(
        "MlpPolicy", "Pendulum-v1",
        **tiny(gamma=1.0, tau=0.0, buffer_size=1, batch_size=1, learning_starts=0, base_lr_decay_steps=None,
               train_freq=(1, "episode"), learning_rate=lambda progress: 1e-4, target_entropy=-0.5),
    )
    assert model.gamma == 1.0 and model.replay_buffer.buffer_size == 1


def _edit_checkpoint(src: pathlib.Path, dst: pathlib.Path, **values) -> None:
    import json
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(raw)
                data.update(values)
                raw = json.dumps(data).encode()
            zout.writestr(item, raw)


@pytest.mark.parametrize("values,message", [
    (dict(batch_size=0), r"batch_size=0: must be an int >= 1"),
    (dict(gamma=1.5, tau=-0.5), r"gamma=1\.5.*\n  tau=-0\.5"),
    (dict(buffer_size=0), r"buffer_size=0"),
])
def test_edited_checkpoint_with_bad_values_fails_on_load(tmp_path, trained, values, message):
    good = tmp_path / "good.zip"
    trained.save(good)
    bad = tmp_path / "bad.zip"
    _edit_checkpoint(good, bad, **values)
    with pytest.raises(ValueError, match=r"'.*bad\.zip' holds out-of-range values \(was the checkpoint edited\?\)") as e:
        EXPO.load(bad)
    assert e.match(message)
    # the documented fix: override the value at load
    fixed = {k: dict(batch_size=16, gamma=0.99, tau=0.005, buffer_size=5000)[k] for k in values}
    assert EXPO.load(bad, **fixed).batch_size == 16


@pytest.mark.parametrize("steps,message", [
    (-5, r"total_timesteps must be >= 0"),
    (10.5, r"total_timesteps must be a whole number"),
    ("100", r"total_timesteps must be a whole number"),
    (None, r"total_timesteps must be a whole number"),
    (float("inf"), r"total_timesteps must be a whole number"),
])
def test_learn_rejects_a_bad_step_budget(trained, steps, message):
    before = trained.num_timesteps
    with pytest.raises(ValueError, match=message):
        trained.learn(steps, reset_num_timesteps=False)
    assert trained.num_timesteps == before


def test_learn_takes_an_integral_float_and_zero():
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **tiny(learning_starts=1000))
    model.learn(1e1)
    assert model.num_timesteps == 10
    model.learn(0)
    assert model.num_timesteps == 0


# ---------------------------------------------------------------- predict on non-finite observations
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("deterministic", [False, True])
def test_predict_rejects_non_finite_observations(trained, bad, deterministic):
    obs = np.array([1.0, 0.0, bad], dtype=np.float32)
    with pytest.raises(ValueError, match=r"EXPO\.predict: the observation holds 1 NaN/inf value\(s\) \(first at index \(2,\)"):
        trained.predict(obs, deterministic=deterministic)
    batch = np.zeros((3, 3), dtype=np.float32)
    batch[1, 0] = bad
    with pytest.raises(ValueError, match=r"first at index \(1, 0\)"):
        trained.predict(batch, deterministic=deterministic)
    action, _ = trained.predict(np.array([1.0, 0.0, 0.5], dtype=np.float32), deterministic=deterministic)
    assert np.isfinite(action).all()


def test_predict_names_the_dict_key_holding_nan():
    from tests.test_expo_core import DictPendulum
    import gymnasium as gym

    env = DictPendulum(gym.make("Pendulum-v1"))
    model = EXPO("MultiInputPolicy", env, **tiny())
    obs = {"angle": np.array([1.0, 0.0], np.float32), "velocity": np.array([np.nan], np.float32)}
    with pytest.raises(ValueError, match=r"in key 'velocity', first at index \(0,\)"):
        model.predict(obs)


# ---------------------------------------------------------------- load_replay_buffer
def test_replay_buffer_from_another_env_is_rejected(tmp_path, trained):
    other = EXPO("MlpPolicy", "InvertedPendulum-v5", **tiny(learning_starts=1000))
    other.learn(5)
    other.save_replay_buffer(tmp_path / "other.pkl")
    own = trained.replay_buffer
    with pytest.raises(ValueError, match=r"does not fit this model: its observation_space is Box.*\(4,\).*the model's is Box.*\(3,\).*; its action_space"):
        trained.load_replay_buffer(tmp_path / "other.pkl")
    assert trained.replay_buffer is own  # the model keeps its buffer


def test_replay_buffer_from_another_number_of_envs_is_rejected(tmp_path, trained):
    from stable_baselines3.common.env_util import make_vec_env

    two = EXPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2), **tiny(learning_starts=1000))
    two.learn(4)
    two.save_replay_buffer(tmp_path / "two.pkl")
    with pytest.raises(ValueError, match=r"it was filled by 2 envs, the model steps 1"):
        trained.load_replay_buffer(tmp_path / "two.pkl")


def test_truncated_or_foreign_replay_buffer_pickle_gives_a_clear_error(tmp_path, trained):
    import pickle

    trained.save_replay_buffer(tmp_path / "rb.pkl")
    raw = (tmp_path / "rb.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(raw[: len(raw) // 2])
    own = trained.replay_buffer
    with pytest.raises(ValueError, match=r"'.*cut\.pkl' is not a readable replay buffer \(.*\)\. The file may be truncated"):
        trained.load_replay_buffer(tmp_path / "cut.pkl")
    (tmp_path / "garbage.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match=r"is not a readable replay buffer"):
        trained.load_replay_buffer(tmp_path / "garbage.pkl")
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match=r"holds a dict, not an SB3 ReplayBuffer"):
        trained.load_replay_buffer(tmp_path / "dict.pkl")
    assert trained.replay_buffer is own
    trained.load_replay_buffer(tmp_path / "rb.pkl")  # the good one still loads
    assert trained.replay_buffer.size() == own.size()


# ---------------------------------------------------------------- robomimic files: file, demo and field named
def _robomimic_file(tmp_path, edit=None):
    import h5py

    from tests.test_offline_data import write_robomimic_file

    path = tmp_path / "low_dim.hdf5"
    write_robomimic_file(path)
    if edit is not None:
        with h5py.File(path, "a") as f:
            edit(f)
    return path


def _replace(f, name, value):
    del f[name]
    f.create_dataset(name, data=value)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda f: _replace(f, "data/demo_1/rewards", np.zeros(5)),
         r"data/demo_1/rewards has 5 rows but data/demo_1/actions has 3"),
        (lambda f: _replace(f, "data/demo_10/dones", np.zeros(4)),
         r"data/demo_10/dones has 4 rows but data/demo_10/actions has 5"),
        (lambda f: _replace(f, "data/demo_0/obs/object", np.zeros((8, 2))),  # same size as (4, 4): no reshape error
         r"data/demo_0/obs/object has 8 rows but data/demo_0/actions has 4"),
        (lambda f: _replace(f, "data/demo_1/next_obs/robot0_eef_pos", np.zeros((2, 3))),
         r"data/demo_1/next_obs/robot0_eef_pos has 2 rows but data/demo_1/actions has 3"),
        (lambda f: f.__delitem__("data/demo_1/rewards"), r"data/demo_1 has no 'rewards' dataset"),
        (lambda f: f.__delitem__("data/demo_0/actions"), r"data/demo_0 has no 'actions' dataset"),
    ],
    ids=["rewards-length", "dones-length", "obs-rows", "next-obs-rows", "no-rewards", "no-actions"],
)
def test_robomimic_validation_names_file_demo_and_field(tmp_path, edit, message):
    from sb3_expo.wrappers import OfflineDataError, load_robomimic_dataset

    path = _robomimic_file(tmp_path, edit)
    with pytest.raises(OfflineDataError, match=message) as info:
        load_robomimic_dataset(path, ["object", "robot0_eef_pos"])
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_garbage_hdf5_names_the_file(tmp_path, damage):
    from sb3_expo.wrappers import OfflineDataError, load_robomimic_dataset

    path = _robomimic_file(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3] if damage == "truncate" else b"garbage" * 100)
    with pytest.raises(OfflineDataError, match=r"robomimic dataset '.*low_dim\.hdf5' cannot be read as HDF5 .*truncated"):
        load_robomimic_dataset(path, ["object"])


# ---------------------------------------------------------------- checkpoints missing entries
def _drop_from_checkpoint(src: pathlib.Path, dst: pathlib.Path, member: str | None = None, data_key: str | None = None):
    import json
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if item.filename == member:
                continue
            raw = zin.read(item.filename)
            if item.filename == "data" and data_key is not None:
                data = json.loads(raw)
                del data[data_key]
                raw = json.dumps(data).encode()
            zout.writestr(item, raw)


@pytest.mark.parametrize(
    "member,data_key,message",
    [
        ("policy.pth", None, r"no 'policy\.pth' entry \(the network weights\)"),
        ("policy.critic_optimizer.pth", None, r"no 'policy\.critic_optimizer\.pth' entry"),
        (None, "observation_space", r"its 'data' entry has no 'observation_space'"),
        (None, "action_space", r"its 'data' entry has no 'action_space'"),
        (None, "policy_class", r"its 'data' entry has no 'policy_class'"),
    ],
)
def test_checkpoint_missing_an_entry_names_it(tmp_path, trained, member, data_key, message):
    good = tmp_path / "good.zip"
    trained.save(good)
    bad = tmp_path / "bad.zip"
    _drop_from_checkpoint(good, bad, member, data_key)
    with pytest.raises(ValueError, match=r"'.*bad\.zip' is an incomplete EXPO checkpoint: " + message):
        EXPO.load(bad)


# ---------------------------------------------------------------- Dict observations
def test_dict_observation_missing_a_key_is_named():
    import gymnasium as gym

    from tests.test_expo_core import DictPendulum

    model = EXPO("MultiInputPolicy", DictPendulum(gym.make("Pendulum-v1")), **tiny())
    with pytest.raises(ValueError, match=r"the observation has no key\(s\) \['velocity'\] of the Dict observation space"):
        model.predict({"angle": np.array([1.0, 0.0], np.float32)})
    with pytest.raises(ValueError, match=r"expects a dict observation with keys \['angle', 'velocity'\], got ndarray"):
        model.predict(np.zeros(3, np.float32))
