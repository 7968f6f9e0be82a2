"""
Robomimic Lift end to end: env from a dataset's env_args, scripted demos in robomimic's HDF5 layout.

Everything but the first two tests needs robosuite (the ``[robosuite]`` extra) and is skipped without it.
Runtime: about 30-60 s on 2 cores (one 10-demo dataset per module, two envs).
"""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sb3_expo.envs  # noqa: F401  (registers the ids)

OBS_KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]
N_DEMOS = 10
SKIP_REASON = 'robosuite is not installed (optional extra: pip install -e ".[robosuite]")'


# ---------------------------------------------------------------------------------------------------------------
# Without robosuite
# ---------------------------------------------------------------------------------------------------------------
def test_import_does_not_need_robosuite() -> None:
    code = (
        "import sys, gymnasium as gym, sb3_expo, sb3_expo.envs\n"
        "assert 'robosuite' not in sys.modules\n"
        "assert 'sb3_expo/RobomimicLift-v0' in gym.registry\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_robosuite_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "robosuite", None)  # makes `import robosuite` raise ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[robosuite\]"'):
        gym.make("sb3_expo/RobomimicLift-v0")


# ---------------------------------------------------------------------------------------------------------------
# With robosuite
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def robosuite() -> object:
    return pytest.importorskip("robosuite", reason=SKIP_REASON)


@pytest.fixture(scope="module")
def lift_dataset(robosuite: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """(path, stats) of a 10-demo scripted Lift dataset, written through the command line entry point."""
    from sb3_expo.datasets.robomimic_lift import main

    path = str(tmp_path_factory.mktemp("robomimic") / "lift_scripted.hdf5")
    stats = main(["--out", path, "--n-demos", str(N_DEMOS), "--seed", "0", "--noise", "0.05"])
    return path, stats


@pytest.fixture(scope="module")
def loaded(lift_dataset: tuple[str, dict]):
    from sb3_expo.wrappers import load_robomimic_dataset

    return load_robomimic_dataset(lift_dataset[0], OBS_KEYS)


def test_scripted_controller_succeeds(lift_dataset: tuple[str, dict]) -> None:
    _, stats = lift_dataset
    assert stats["n_demos"] == N_DEMOS
    assert stats["success_rate"] >= 0.7, stats
    assert 10 < stats["mean_length"] < 200, stats


def test_robomimic_layout(lift_dataset: tuple[str, dict]) -> None:
    import h5py

    path, stats = lift_dataset
    with h5py.File(path, "r") as f:
        data = f["data"]
        demos = sorted(data.keys(), key=lambda name: int(name.split("_")[1]))
        assert demos == [f"demo_{i}" for i in range(N_DEMOS)]
        assert int(data.attrs["total"]) == sum(int(data[d].attrs["num_samples"]) for d in demos) == stats["total"]
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == "Lift" and env_args["type"] == 1
        assert env_args["env_kwargs"]["reward_shaping"] is False and env_args["env_kwargs"]["horizon"] == 400
        assert [m.decode() for m in f["mask/successful"][()]] == demos
        for name in demos:
            demo = data[name]
            n = int(demo.attrs["num_samples"])
            assert demo["actions"].shape == (n, 7) and np.abs(demo["actions"][()]).max() <= 1.0
            assert demo["states"].shape[0] == n and demo["states"].ndim == 2
            assert set(OBS_KEYS) <= set(demo["obs"]) and set(demo["obs"]) == set(demo["next_obs"])
            for key in demo["obs"]:
                assert demo["obs"][key].shape[0] == demo["next_obs"][key].shape[0] == n
            # next_obs[t] is obs[t + 1]
            np.testing.assert_array_equal(demo["next_obs/object"][:-1], demo["obs/object"][1:])
            # ends at the first success: sparse reward and done only on the last row
            np.testing.assert_array_equal(demo["rewards"][()], np.eye(n)[-1])
            np.testing.assert_array_equal(demo["dones"][()], np.eye(n, dtype=np.int64)[-1])
            assert "<mujoco" in demo.attrs["model_file"]


def test_sequence_dataset_and_loader_agree(lift_dataset: tuple[str, dict], loaded) -> None:
    obs_utils = pytest.importorskip("robomimic.utils.obs_utils", reason="robomimic is not installed")
    from robomimic.utils.dataset import SequenceDataset

    path, stats = lift_dataset
    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": OBS_KEYS}})
    ds = SequenceDataset(
        hdf5_path=path,
        obs_keys=OBS_KEYS,
        dataset_keys=("actions", "rewards", "dones"),
        load_next_obs=True,
        hdf5_cache_mode="low_dim",
        hdf5_use_swmr=False,
        filter_by_attribute="successful",
    )
    assert len(ds) == len(loaded) == stats["total"]
    items = [ds[i] for i in range(len(ds))]
    obs = np.stack([np.concatenate([it["obs"][k][0] for k in OBS_KEYS]) for it in items])
    next_obs = np.stack([np.concatenate([it["next_obs"][k][0] for k in OBS_KEYS]) for it in items])
    np.testing.assert_allclose(loaded.observations, obs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(loaded.next_observations, next_obs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(loaded.actions, np.stack([it["actions"][0] for it in items]), atol=1e-6)
    np.testing.assert_array_equal(loaded.rewards, np.array([it["rewards"][0] for it in items], dtype=np.float32))
    np.testing.assert_array_equal(loaded.terminations, np.array([it["dones"][0] for it in items]).astype(bool))
    assert loaded.observations.shape[1] == 3 + 4 + 2 + 10


@pytest.fixture(scope="module")
def dataset_env(lift_dataset: tuple[str, dict]):
    from sb3_expo.envs import make_robomimic_env

    env = make_robomimic_env(lift_dataset[0], obs_keys=OBS_KEYS)
    yield env
    env.close()


def test_env_obs_equals_loader_obs_at_stored_states(lift_dataset: tuple[str, dict], loaded, dataset_env) -> None:
    import h5py

    env = dataset_env.unwrapped
    assert env.obs_keys == OBS_KEYS
    assert dataset_env._max_episode_steps == 400  # TimeLimit at the dataset's horizon
    starts = loaded.episode_starts
    with h5py.File(lift_dataset[0], "r") as f:
        for ep in (0, 3, N_DEMOS - 1):
            states = f[f"data/demo_{ep}/states"][()]
            for t in (0, len(states) // 2, len(states) - 1):
                obs = env.reset_to(states[t])
                assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
                np.testing.assert_allclose(obs, loaded.observations[starts[ep] + t], rtol=0, atol=1e-5)
        # with the stored model xml (robomimic's reset_to({"model", "states"})), the state round-trips exactly
        demo = f["data/demo_1"]
        obs = env.reset_to({"model": demo.attrs["model_file"], "states": demo["states"][0]})
        np.testing.assert_allclose(obs, loaded.observations[starts[1]], rtol=0, atol=1e-5)
        np.testing.assert_allclose(env.get_state()["states"], demo["states"][0], rtol=0, atol=1e-9)


def test_replaying_a_demo_succeeds(lift_dataset: tuple[str, dict], dataset_env) -> None:
    """env_args + model + states + actions are consistent: replaying demo_2's actions lifts the cube again."""
    import h5py

    env = dataset_env.unwrapped
    with h5py.File(lift_dataset[0], "r") as f:
        demo = f["data/demo_2"]
        actions = demo["actions"][()]
        env.reset_to({"model": demo.attrs["model_file"], "states": demo["states"][0]})
    successes = [env.step(a)[4]["success"] for a in actions]
    # contact dynamics may shift the first success by a step or two (solver warm start is not in the state)
    assert any(successes[-3:]), successes[-5:]


def test_env_from_robomimic_style_env_args(robosuite: object) -> None:
    """robomimic's own files store no horizon; kwargs of other robosuite versions are dropped with a warning."""
    from sb3_expo.envs import default_env_args, make_robomimic_env

    env_args = default_env_args("Lift")
    del env_args["env_kwargs"]["horizon"]
    env_args["env_kwargs"]["lite_physics"] = True  # a robosuite 1.5 kwarg
    with pytest.warns(UserWarning, match="lite_physics"):
        env = make_robomimic_env(env_args, obs_keys=["object", "robot0_eef_pos"])
    try:
        assert env._max_episode_steps == 400  # robomimic's Lift rollout horizon
        obs, _ = env.reset(seed=0)
        assert obs.shape == (13,)
        np.testing.assert_array_equal(obs[:10], env.unwrapped.last_obs_dict["object"].astype(np.float32))
    finally:
        env.close()


def test_env_api(robosuite: object) -> None:
    # hard_reset=False: resets keep the loaded model (10x faster; check_env resets several times)
    env = gym.make("sb3_expo/RobomimicLift-v0", env_kwargs={"hard_reset": False})
    try:
        assert env.spec is not None and env.spec.max_episode_steps == 400
        assert env.action_space == gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        assert env.observation_space.shape == (19,) and env.observation_space.dtype == np.float32
        obs, info = env.reset(seed=3)
        assert obs.dtype == np.float32 and env.observation_space.contains(obs) and info["success"] is False
        obs_again, _ = env.reset(seed=3)
        np.testing.assert_array_equal(obs, obs_again)  # seeded placement, independent of np.random's global state
        big = np.array([5.0, -5.0, 3.0, 0.0, 0.0, 0.0, 2.0])
        out_big = env.step(big)
        env.reset(seed=3)
        out_clipped = env.step(np.clip(big, -1.0, 1.0))
        np.testing.assert_array_equal(out_big[0], out_clipped[0])  # actions are clipped to [-1, 1]
        assert out_big[0].dtype == np.float32 and env.observation_space.contains(out_big[0])
        assert out_big[1] == 0.0 and out_big[2] is False and out_big[3] is False
        assert set(out_big[4]) >= {"success", "is_success"}
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()
