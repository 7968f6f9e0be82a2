"""One id per demo dataset: the dataset command line writes the ids that zoo_configs/*.yml and the main job read."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from sb3_expo.datasets.controllers import CONTROLLERS, DEMO_DATASETS, DEMO_ENV_KWARGS
from sb3_expo.datasets.make_minari import default_dataset_id, main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _zoo_entries(name: str) -> dict:
    return yaml.safe_load((ROOT / "zoo_configs" / name).read_text())


def test_every_controller_has_a_demo_dataset():
    assert set(DEMO_DATASETS) == set(CONTROLLERS)


@pytest.mark.parametrize("env_id", sorted(CONTROLLERS))
def test_default_id_is_the_zoo_configs_id(env_id):
    entry = _zoo_entries("expo.yml")[env_id]
    assert default_dataset_id(env_id) == entry["replay_buffer_kwargs"]["dataset_id"]
    # the command line's defaults write the dataset the launcher would write (make_dataset)
    _, quality, episodes = DEMO_DATASETS[env_id]
    assert entry["make_dataset"] == {"n_episodes": episodes, "quality": quality}
    # the SAC baselines read the same copy
    for name in ("sac.yml", "sac_plain.yml"):
        other = _zoo_entries(name).get(env_id)
        if other is not None and "dataset_id" in other.get("replay_buffer_kwargs", {}):
            assert other["replay_buffer_kwargs"]["dataset_id"] == default_dataset_id(env_id), name


@pytest.mark.parametrize("env_id", sorted(DEMO_ENV_KWARGS))
def test_zoo_entries_train_on_the_task_the_data_was_recorded_on(env_id):
    for name in ("expo.yml", "rlpd.yml"):
        assert _zoo_entries(name)[env_id]["env_kwargs"] == DEMO_ENV_KWARGS[env_id], name


def test_main_job_reads_the_default_id():
    from sb3_expo import main_job

    assert main_job.DATASET_ID == default_dataset_id("Pendulum-v1")


def test_an_explicit_quality_names_its_own_dataset():
    assert default_dataset_id("MountainCarContinuous-v0", "medium") == "sb3-expo/mountaincar-medium-v0"
    assert default_dataset_id("Pendulum-v1", "expert") == "sb3-expo/pendulum-expert-v0"


def test_command_line_writes_the_zoo_configs_id(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    main(["--env", "MountainCarContinuous-v0", "--episodes", "1"])
    assert "sb3-expo/mountaincar-expert-v0: 1 episodes" in capsys.readouterr().out
    assert (tmp_path / "sb3-expo" / "mountaincar-expert-v0" / "data").is_dir()
