"""RL Zoo integration: real ``rl_zoo3`` runs through ``python -m sb3_expo.train`` / ``sb3_expo.enjoy`` (no mocks),
every entry of ``zoo_configs/*.yml``, the early errors, the Optuna sampler and the main job's ``--quick`` mode.

Runs in-process (``main(argv)``) to save the interpreter start-up, except one real subprocess for the CLI.
Tiny configs throughout; ``MINARI_DATASETS_PATH`` is the session temp dir of ``conftest.py``.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_expo import EXPO
from sb3_expo.zoo import (
    PretrainCallback,
    ZooConfigError,
    convert_expo_params,
    load_zoo_yaml,
    prepare_hyperparams,
    register,
    sample_expo_params,
    validate_yaml,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "zoo_configs").glob("*.yml"))

TINY_EXPO = """
{env}:
  policy: MlpPolicy
  n_timesteps: 150
  batch_size: 16
  gradient_steps: 1
  n_diffusion_steps: 2
  n_action_samples: 2
  n_edit_samples: 2
  learning_starts: 50
  buffer_size: 1000
  policy_kwargs: {{base_hidden_dim: 16, base_n_blocks: 1, base_time_dim: 8, edit_net_arch: [16], critic_net_arch: [16], n_critics: 2}}
  replay_buffer_class: sb3_expo.wrappers.MinariReplayBuffer
  replay_buffer_kwargs: {{dataset_id: {dataset}, offline_fraction: 0.5}}
  pretrain_steps: 10
  pretrain_kwargs: {{progress_bar: false}}
{extra}
"""


def tiny_yaml(tmp_path: pathlib.Path, env: str = "Pendulum-v1", dataset: str = "sb3-expo/pendulum-medium-v0", extra: str = "") -> str:
    path = tmp_path / "tiny.yml"
    path.write_text(TINY_EXPO.format(env=env, dataset=dataset, extra=textwrap.indent(extra, "  ")))
    return str(path)


def algo_of(config: pathlib.Path) -> str:
    """zoo_configs/expo.yml -> expo, sac.yml / sac_plain.yml -> sac."""
    return config.stem.split("_")[0]


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    register()
    th.set_num_threads(1)


def train(argv: list[str]) -> int:
    from sb3_expo.train import main

    return main(argv)


# ------------------------------------------------------------------------------------------------ train, load, enjoy


def test_train_load_enjoy_resume(
    tmp_path: pathlib.Path, pendulum_dataset_id: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tiny_yaml(tmp_path, dataset=pendulum_dataset_id)
    logs = tmp_path / "logs"
    common = ["--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(logs), "--num-threads", "1"]
    rc = train([*common, "--seed", "3", "--eval-freq", "100", "--eval-episodes", "1", "--save-replay-buffer"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Pretraining the base policy for 10 steps" in out
    run_dir = logs / "expo" / "Pendulum-v1_1"
    zip_path = run_dir / "Pendulum-v1.zip"
    assert zip_path.is_file() and (run_dir / "best_model.zip").is_file() and (run_dir / "replay_buffer.pkl").is_file()
    assert "pretrain_steps" in (run_dir / "Pendulum-v1" / "config.yml").read_text()  # saved as written

    model = EXPO.load(zip_path)  # the dataset is present here: the offline buffer is rebuilt
    assert model.num_timesteps == 150
    assert model._n_base_updates >= 10 + 90  # 10 pretraining + one per env step after learning_starts (50)
    action, _ = model.predict(np.zeros(3, dtype=np.float32), deterministic=True)
    assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0

    # enjoy: no render, a bit more than one 200-step episode; it must not need the dataset
    from sb3_expo.enjoy import main as enjoy

    with monkeypatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
        rc = enjoy(["--algo", "expo", "--env", "Pendulum-v1", "-f", str(logs), "--no-render", "-n", "210", "--num-threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "Mean reward" in out

    # resume with -i: the replay buffer is reloaded, pretraining is not repeated
    rc = train([*common, "-i", str(zip_path), "-n", "20", "--eval-freq", "-1", "-params", "learning_starts:0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Loading replay buffer" in out and "not pretraining again" in out
    assert EXPO.load(logs / "expo" / "Pendulum-v1_2" / "Pendulum-v1.zip")._n_base_updates > model._n_base_updates


def test_sac_baseline_with_offline_buffer(tmp_path: pathlib.Path, pendulum_dataset_id: str) -> None:
    conf = tmp_path / "sac.yml"
    conf.write_text(
        textwrap.dedent(
            f"""
            Pendulum-v1:
              policy: MlpPolicy
              n_timesteps: 80
              learning_starts: 40
              batch_size: 16
              gradient_steps: 2
              policy_kwargs: "dict(n_critics=10, net_arch=[16])"
              replay_buffer_class: sb3_expo.wrappers.MinariReplayBuffer
              replay_buffer_kwargs: {{dataset_id: {pendulum_dataset_id}, offline_fraction: 0.5}}
            """
        )
    )
    rc = train(["--algo", "sac", "--env", "Pendulum-v1", "-conf", str(conf), "-f", str(tmp_path / "logs"), "--eval-freq", "-1"])
    assert rc == 0
    from stable_baselines3 import SAC

    model = SAC.load(tmp_path / "logs" / "sac" / "Pendulum-v1_1" / "Pendulum-v1.zip")
    assert model.replay_buffer.offline_size == 2000 and len(model.critic.q_networks) == 10


def test_optimize_with_optuna(tmp_path: pathlib.Path, pendulum_dataset_id: str) -> None:
    conf = tiny_yaml(tmp_path, dataset=pendulum_dataset_id)
    logs = tmp_path / "logs"
    rc = train(
        ["--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(logs), "-optimize", "--n-trials", "2", "-n", "60",
         "--n-evaluations", "1", "--eval-episodes", "1", "--sampler", "random", "--pruner", "none", "--no-optim-plots",
         "--seed", "0", "-params", "learning_starts:40"]
    )  # fmt: skip
    assert rc == 0
    reports = glob.glob(str(logs / "expo" / "report_Pendulum-v1_2-trials-60-random-none_*.csv"))
    assert len(reports) == 1
    text = pathlib.Path(reports[0]).read_text()
    assert "params_edit_scale" in text and "COMPLETE" in text


def test_sampler_and_converter() -> None:
    import optuna

    trial = optuna.trial.FixedTrial(
        dict(learning_rate=3e-4, base_learning_rate=1e-4, edit_scale=0.1, n_action_samples=4, gradient_steps=4,
             batch_size_pow=7, num_min_qs=2, gamma=0.99, tau=0.005)
    )  # fmt: skip
    params = sample_expo_params(trial, n_actions=1, n_envs=1, additional_args={})
    assert params["batch_size"] == 128 and params["n_edit_samples"] == 4 and "batch_size_pow" not in params
    assert convert_expo_params(trial.params) == params  # what --trial-id reloads
    EXPO("MlpPolicy", "Pendulum-v1", buffer_size=100, **params)  # every sampled key is a constructor argument


# ------------------------------------------------------------------------------------------------ every YAML entry


def _stand_in_env(obs_dim: int, action_dim: int) -> gym.Env:
    class StandIn(gym.Env):
        observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

        def reset(self, *, seed=None, options=None):
            return np.zeros(obs_dim, np.float32), {}

        def step(self, action):
            return np.zeros(obs_dim, np.float32), 0.0, False, False, {}

    return StandIn()


def _write_robomimic_hdf5(path: pathlib.Path, object_dim: int) -> None:
    """A 2-demo file in robomimic's low-dim layout (the real ones need a download)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    dims = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": object_dim}
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for i in range(2):
            demo = data.create_group(f"demo_{i}")
            for group in ("obs", "next_obs"):
                for key, dim in dims.items():
                    demo.create_dataset(f"{group}/{key}", data=rng.normal(size=(10, dim)))
            demo.create_dataset("actions", data=rng.uniform(-1, 1, size=(10, 7)))
            demo.create_dataset("rewards", data=np.eye(10)[-1])
            demo.create_dataset("dones", data=np.eye(10)[-1])
            demo.attrs["num_samples"] = 10
        data.attrs["total"] = 20


def _build_with_zoo(config: pathlib.Path, env_id: str, tmp_path: pathlib.Path, overrides: dict) -> object:
    """Build the model exactly as the launcher does (EXPOExperimentManager.setup_experiment), without training."""
    import argparse

    from sb3_expo.zoo import EXPOExperimentManager

    manager = EXPOExperimentManager(
        argparse.Namespace(),
        algo_of(config),
        env_id,
        str(tmp_path / "logs"),
        eval_freq=-1,
        hyperparams=overrides,
        config=str(config),
        verbose=0,
        device="cpu",
    )
    model, _ = manager.setup_experiment()
    return model


ROBOMIMIC_OBJECT_DIMS = {"sb3_expo/RobomimicLift-v0": 10, "sb3_expo/RobomimicCan-v0": 14, "sb3_expo/RobomimicSquare-v0": 14}


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_yaml_entry_builds(
    config: pathlib.Path, tmp_path: pathlib.Path, pendulum_dataset_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Every entry parses, validates and builds its model (no training). Small buffer_size everywhere (the entries'
    1M-transition buffers would only cost memory). Entries whose data cannot be here are checked for their clear
    error and then built with the data part replaced:
    * D4RL Minari ids (need a download): the launcher's error names the id and `minari download`; then built with
      SB3's plain buffer;
    * Robomimic (needs robosuite and a robomimic download): the env error names robosuite (when it is not
      installed); then built on a stand-in env with the task's spaces and a tiny robomimic-layout HDF5 file, with
      the entry's own RobomimicReplayBuffer settings.
    """
    algo = algo_of(config)
    entries = validate_yaml(str(config), algo)
    assert entries, f"{config} has no entries"
    monkeypatch.setenv("ROBOMIMIC_DATA", str(tmp_path / "robomimic"))
    for env_id, entry in entries.items():
        overrides: dict = {"buffer_size": 1000}
        rb_kwargs = entry.get("replay_buffer_kwargs") or {}
        if env_id in ROBOMIMIC_OBJECT_DIMS:
            rel = rb_kwargs["path"].replace("${ROBOMIMIC_DATA}/", "")
            _write_robomimic_hdf5(tmp_path / "robomimic" / rel, ROBOMIMIC_OBJECT_DIMS[env_id])
            try:
                import robosuite  # noqa: F401
            except ImportError:
                with pytest.raises(ImportError, match="robosuite"):
                    gym.make(env_id)
            hp = prepare_hyperparams(algo, env_id, {**entry, **overrides}, verbose=0)
            for key in ("n_timesteps", "policy", "env_kwargs", "env_wrapper", "callback"):
                hp.pop(key, None)
            obs_dim = 9 + ROBOMIMIC_OBJECT_DIMS[env_id]
            model = EXPO(entry["policy"], _stand_in_env(obs_dim, 7), device="cpu", **hp)
            assert model.replay_buffer.offline_size == 20
            continue
        dataset_id = rb_kwargs.get("dataset_id")
        if dataset_id is not None and not dataset_id.startswith("sb3-expo/"):
            with pytest.raises(ZooConfigError, match=f"'{dataset_id}' is not available locally.*minari download"):
                prepare_hyperparams(algo, env_id, entry, verbose=0)
            overrides.update(replay_buffer_class=None, replay_buffer_kwargs=None)
        model = _build_with_zoo(config, env_id, tmp_path / env_id.replace("/", "_"), overrides)
        assert model.env.observation_space == gym.make(env_id).observation_space
        if entry.get("pretrain_steps"):
            assert any(isinstance(c, PretrainCallback) for c in _zoo_callbacks(config, env_id))
        if dataset_id is not None and dataset_id.startswith("sb3-expo/"):
            assert model.replay_buffer.offline_size > 0
        model.env.close()
    capsys.readouterr()


def _zoo_callbacks(config: pathlib.Path, env_id: str) -> list:
    from rl_zoo3.utils import get_callback_list

    hp = prepare_hyperparams(algo_of(config), env_id, load_zoo_yaml(str(config))[env_id], verbose=0)
    return get_callback_list(hp)


def test_configs_use_anchors_and_state_hardware() -> None:
    for config in CONFIGS:
        text = config.read_text()
        assert "&" in text and "<<:" in text, f"{config.name}: use YAML anchors/merge keys for shared blocks"
        for env_id in load_zoo_yaml(str(config)):
            head = text.split(f"\n{env_id}:", 1)[0].rstrip().splitlines()
            comments = [line for line in head[-6:] if line.startswith("#")]
            assert any(w in " ".join(comments) for w in ("CPU", "GPU")), f"{config.name} [{env_id}]: say the hardware/time"


# ------------------------------------------------------------------------------------------------ early errors


def _fails(argv: list[str], capsys: pytest.CaptureFixture, *patterns: str) -> str:
    rc = train(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err  # one line
    for pattern in patterns:
        assert pattern in err[0], err[0]
    return err[0]


def test_bad_key_fails_fast(tmp_path: pathlib.Path, pendulum_dataset_id: str, capsys: pytest.CaptureFixture) -> None:
    conf = tiny_yaml(tmp_path, dataset=pendulum_dataset_id, extra="edit_scal: 0.2")
    logs = tmp_path / "logs"
    _fails(["--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(logs)], capsys,
           "unknown hyperparameter 'edit_scal'", "Did you mean 'edit_scale'?")  # fmt: skip
    assert not (logs / "expo").exists()  # nothing was created
    # the same through -params, and a policy_kwargs typo, and a bad value
    conf = tiny_yaml(tmp_path, dataset=pendulum_dataset_id)
    base = ["--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(logs)]
    _fails([*base, "-params", "n_action_sample:4"], capsys, "'n_action_sample'", "n_action_samples")
    _fails([*base, "-params", "policy_kwargs:dict(n_critic=4)"], capsys, "policy_kwargs key 'n_critic'", "n_critics")
    _fails([*base, "-params", "policy_kwargs:dict(edit_scale=0.2)"], capsys, "put it at the top level")
    _fails([*base, "-params", "selection:'maxq'"], capsys, "selection must be one of")
    _fails([*base, "-params", "seed:3"], capsys, "--seed")


def test_unknown_env_fails_fast(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    conf = tiny_yaml(tmp_path)
    _fails(["--algo", "expo", "--env", "Pendulm-v1", "-conf", conf], capsys, "Unknown environment id 'Pendulm-v1'", "Pendulum-v1")


def test_dataset_errors_fail_fast(tmp_path: pathlib.Path, pendulum_dataset_id: str, capsys: pytest.CaptureFixture) -> None:
    # a dataset of another env
    conf = tiny_yaml(tmp_path, env="MountainCarContinuous-v0", dataset=pendulum_dataset_id)
    _fails(["--algo", "expo", "--env", "MountainCarContinuous-v0", "-conf", conf, "-f", str(tmp_path / "l")], capsys,
           "recorded on Pendulum-v1", "MountainCarContinuous-v0")  # fmt: skip
    # a dataset that is not local and cannot be written here
    conf = tiny_yaml(tmp_path, dataset="D4RL/door/human-v2")
    _fails(["--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(tmp_path / "l")], capsys,
           "'D4RL/door/human-v2' is not available locally", "minari download")  # fmt: skip
    # an env/dataset mismatch that only the buffer's own space check sees (check_dataset_env off)
    conf = tiny_yaml(tmp_path, env="MountainCarContinuous-v0", dataset=pendulum_dataset_id, extra="check_dataset_env: false")
    _fails(["--algo", "expo", "--env", "MountainCarContinuous-v0", "-conf", conf, "-f", str(tmp_path / "l")], capsys,
           "Observation shape mismatch")  # fmt: skip


def test_demo_dataset_is_written_on_demand(tmp_path: pathlib.Path, minari_datasets_path: pathlib.Path) -> None:
    entry = load_zoo_yaml(str(REPO / "zoo_configs" / "expo.yml"))["MountainCarContinuous-v0"]
    entry = {**entry, "make_dataset": {"n_episodes": 2, "quality": "expert"}}
    entry["replay_buffer_kwargs"] = {**entry["replay_buffer_kwargs"], "dataset_id": "sb3-expo/mountaincar-ondemand-v0"}
    prepare_hyperparams("expo", "MountainCarContinuous-v0", entry, verbose=0)
    assert (minari_datasets_path / "sb3-expo" / "mountaincar-ondemand-v0" / "data").is_dir()


def test_cli_subprocess_one_line_error(tmp_path: pathlib.Path) -> None:
    """The real command line: a typo exits with code 2 and ONE line on stderr, before any env is built."""
    conf = tiny_yaml(tmp_path, extra="edit_scal: 0.2")
    proc = subprocess.run(
        [sys.executable, "-m", "sb3_expo.train", "--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(tmp_path / "l")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and "Did you mean 'edit_scale'?" in lines[0]


# ------------------------------------------------------------------------------------------------ the main job


def test_main_job_quick(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sb3_expo.main_job import run

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    out = tmp_path / "main_job"
    summary = run(["--quick", "--out", str(out), "--no-progress"])
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert (out / "expo_pendulum.zip").is_file() and (out / "sac_pendulum.zip").is_file()
    saved = json.loads((out / "summary.json").read_text())
    for mode in ("deterministic", "stochastic"):  # both evaluation modes, for EXPO and the baseline
        assert saved["expo"]["final"][mode]["mean"] == summary["expo"]["final"][mode]["mean"]
        assert np.isfinite(saved["expo"]["final"][mode]["iqm"]) and np.isfinite(saved["baseline"]["final"][mode]["iqm"])
        assert [p[0] for p in saved["expo"]["curves"][mode]] == [0, 100, 200]  # the final evaluation ends the curve
    model = EXPO.load(out / "expo_pendulum.zip")
    assert model.predict(np.zeros(3, dtype=np.float32))[0].shape == (1,)


# ------------------------------------------------------------------------------------------------ rl_zoo3's own CLI


def test_rl_zoo3_cli_trains_expo(tmp_path: pathlib.Path, pendulum_dataset_id: str) -> None:
    """``python -m rl_zoo3.train --algo expo``: the zoo's own CLI, through the import hook sb3-expo installs."""
    conf = tiny_yaml(tmp_path, dataset=pendulum_dataset_id)
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(logs),
           "--eval-freq", "-1", "-n", "60", "--num-threads", "1", "-params", "learning_starts:40"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pretraining the base policy for 10 steps" in proc.stdout  # EXPO's YAML keys work there too
    assert EXPO.load(logs / "expo" / "Pendulum-v1_1" / "Pendulum-v1.zip").num_timesteps == 60
    # without the hook the zoo does not know EXPO: the hook is what makes the command work
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "SB3_EXPO_RL_ZOO": "0"})  # fmt: skip
    assert proc.returncode == 2 and "invalid choice: 'expo'" in proc.stderr


def test_rl_zoo3_cli_leaves_other_algorithms_alone() -> None:
    from sb3_expo.zoo.experiment_manager import EXPOExperimentManager, RLZooExperimentManager

    hooked, ours = RLZooExperimentManager.__new__(RLZooExperimentManager), EXPOExperimentManager.__new__(EXPOExperimentManager)
    hooked.algo = ours.algo = "sac"
    assert not hooked._ours() and ours._ours()  # plain `rl_zoo3.train --algo sac` runs exactly as without sb3-expo
    hooked.algo = "expo"
    assert hooked._ours()
    hooked.algo = "rlpd"  # the package's other algorithm: its YAML keys work under rl_zoo3.train too
    assert hooked._ours()


def test_params_typo_is_blamed_on_params(tmp_path: pathlib.Path, pendulum_dataset_id: str, capsys: pytest.CaptureFixture) -> None:
    conf = tiny_yaml(tmp_path, dataset=pendulum_dataset_id)
    line = _fails(["--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(tmp_path / "l"), "-params", "edit_scal:0.2"],
                  capsys, "-params: unknown hyperparameter 'edit_scal'", "Did you mean 'edit_scale'?")  # fmt: skip
    assert conf not in line  # the YAML file is not blamed for a command-line typo
    line = _fails(["--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(tmp_path / "l"), "-params", "gradient_steps:0"],
                  capsys, "-params: gradient_steps must be")  # fmt: skip


def test_resume_says_whether_the_buffer_came_back(
    tmp_path: pathlib.Path, pendulum_dataset_id: str, capsys: pytest.CaptureFixture
) -> None:
    conf = tiny_yaml(tmp_path, dataset=pendulum_dataset_id)
    logs = tmp_path / "logs"
    common = ["--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(logs), "--num-threads", "1", "--eval-freq", "-1"]
    assert train([*common, "-n", "60", "-params", "learning_starts:40"]) == 0  # saved WITHOUT --save-replay-buffer
    capsys.readouterr()
    assert train([*common, "-i", str(logs / "expo" / "Pendulum-v1_1" / "Pendulum-v1.zip"), "-n", "10"]) == 0
    out = capsys.readouterr().out
    assert "No replay buffer next to" in out and "--save-replay-buffer" in out
    assert "counts env steps from 0 again" in out
    assert EXPO.load(logs / "expo" / "Pendulum-v1_2" / "Pendulum-v1.zip").num_timesteps == 10  # rl_zoo3's behaviour


# ------------------------------------------------------------------------------------------------ tuning that scales out


def test_search_space_is_bounded_by_the_device_preset() -> None:
    import optuna

    from sb3_expo.zoo.tuning import search_space, trials_on

    cpu, reference = search_space("cpu"), search_space(preset="reference")
    assert max(cpu["gradient_steps"]) <= 4 and max(cpu["n_action_samples"]) <= 4 and 2 ** max(cpu["batch_size_pow"]) <= 128
    assert 20 in reference["gradient_steps"] and 8 in reference["n_action_samples"]  # the authors' settings on CUDA
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with trials_on("cpu"):
        drawn = [sample_expo_params(study.ask(), 1, 1, {}) for _ in range(40)]
    assert max(p["gradient_steps"] for p in drawn) <= 4 and max(p["n_action_samples"] for p in drawn) <= 4


def test_two_workers_share_one_sqlite_study(tmp_path: pathlib.Path, pendulum_dataset_id: str) -> None:
    """Two worker processes on one Optuna study in SQLite (rl_zoo3's --storage): both trials land in the study, and
    the study pretrains once; every trial loads that."""
    import optuna

    conf = tiny_yaml(tmp_path, dataset=pendulum_dataset_id)
    logs, storage = tmp_path / "logs", f"sqlite:///{tmp_path / 'study.db'}"
    cmd = [sys.executable, "-m", "sb3_expo.train", "--algo", "expo", "--env", "Pendulum-v1", "-conf", conf, "-f", str(logs),
           "-optimize", "--n-trials", "1", "-n", "60", "--n-evaluations", "1", "--eval-episodes", "1", "--sampler", "random",
           "--pruner", "none", "--no-optim-plots", "--storage", storage, "--study-name", "expo-tiny", "--num-threads", "1",
           "-params", "learning_starts:40"]  # fmt: skip
    workers = [
        subprocess.Popen([*cmd, "--seed", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    study = optuna.load_study(study_name="expo-tiny", storage=storage)
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 2
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("Pretraining once for the study") == 1
    assert stdout.count("Loading the study's pretrained parts") == 2
    assert len(list((logs / "expo" / "pretrained").glob("*.pt"))) == 1


def test_study_pretraining_is_loaded_not_repeated(tmp_path: pathlib.Path, pendulum_dataset_id: str) -> None:
    from sb3_expo.zoo.pretraining import load_pretrained, pretrained_parts, save_pretrained

    from sb3_expo.wrappers import MinariReplayBuffer

    kwargs = dict(buffer_size=500, learning_starts=0, replay_buffer_class=MinariReplayBuffer,
                  replay_buffer_kwargs=dict(dataset_id=pendulum_dataset_id), preset="tiny")  # fmt: skip
    source = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **kwargs).pretrain(5)
    save_pretrained(source, tmp_path / "p.pt", pretrained_parts())
    trial = EXPO("MlpPolicy", "Pendulum-v1", seed=1, base_learning_rate=1e-4, **kwargs)
    critic_before = {k: v.clone() for k, v in trial.policy.q_ensemble.state_dict().items()}
    load_pretrained(trial, tmp_path / "p.pt")
    for a, b in zip(source.policy.base_policy.parameters(), trial.policy.base_policy.parameters()):
        assert th.equal(a, b)
    for k, v in trial.policy.q_ensemble.state_dict().items():  # only what pretrain() trained is loaded
        assert th.equal(v, critic_before[k])
    assert trial._n_base_updates == 5
    assert trial.policy.base_optimizer.param_groups[0]["lr"] == pytest.approx(trial._base_learning_rate())
    assert trial._base_learning_rate() == pytest.approx(1e-4)  # the trial's own learning rate, not the source's


def test_pretrain_callback_shows_a_bar_exactly_when_learn_does() -> None:
    from stable_baselines3.common.callbacks import CallbackList, EvalCallback, ProgressBarCallback

    from sb3_expo.zoo.pretraining import _learn_shows_progress_bar

    assert PretrainCallback(10).pretrain_kwargs["progress_bar"] is None  # default: follow learn()
    assert _learn_shows_progress_bar({"progress_bar": True, "callback": CallbackList([])})
    assert _learn_shows_progress_bar({"progress_bar": False, "callback": CallbackList([PretrainCallback(10), ProgressBarCallback()])})
    assert not _learn_shows_progress_bar({"progress_bar": False, "callback": CallbackList([PretrainCallback(10)])})
    assert not _learn_shows_progress_bar({"progress_bar": False, "callback": EvalCallback.__new__(EvalCallback)})
