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
from sb3_expo.wrappers.atomic_io import atomic_path


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
