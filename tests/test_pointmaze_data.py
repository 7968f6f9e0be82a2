"""The PointMaze demo data: the scripted waypoint controller reaches the goal, and ``make_minari --env
PointMaze_UMaze-v3`` writes a real Minari dataset (minari's DataCollector) of Dict observations on the demo task."""

from __future__ import annotations

import numpy as np
import pytest

gymnasium_robotics = pytest.importorskip("gymnasium_robotics")

import gymnasium as gym  # noqa: E402

from sb3_expo.datasets.controllers import CONTROLLERS, DEMO_ENV_KWARGS, NoisyController, QUALITY_PRESETS  # noqa: E402
from sb3_expo.datasets.make_minari import main  # noqa: E402

ENV_ID = "PointMaze_UMaze-v3"
gym.register_envs(gymnasium_robotics)


def _rollouts(quality: str, n: int, **env_kwargs) -> tuple[list[bool], list[int]]:
    env = gym.make(ENV_ID, **{**DEMO_ENV_KWARGS[ENV_ID], **env_kwargs})
    policy = NoisyController(CONTROLLERS[ENV_ID], env.action_space, *QUALITY_PRESETS[quality], seed=0)
    success, lengths = [], []
    for episode in range(n):
        obs, _ = env.reset(seed=episode)
        for t in range(1000):
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            if terminated or truncated:
                break
        success.append(bool(info["success"]) and terminated and reward == 1.0)
        lengths.append(t + 1)
    env.close()
    return success, lengths


def test_controller_reaches_the_goal():
    success, lengths = _rollouts("expert", 10)
    assert np.mean(success) >= 0.9 and max(lengths) < 300  # measured: 30/30, 112-128 steps
    # the random-goal default task too (any start and goal cell of the U)
    success, _ = _rollouts("expert", 10, maze_map=gymnasium_robotics.envs.maze.maps.U_MAZE)
    assert np.mean(success) >= 0.9
    success, _ = _rollouts("random", 3)
    assert not any(success)  # sparse: random actions do not get there in 300 steps


def test_command_line_writes_the_demo_dataset(tmp_path, monkeypatch, capsys):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    main(["--env", ENV_ID])
    assert "sb3-expo/pointmaze-umaze-expert-v0: 10 episodes" in capsys.readouterr().out
    dataset = minari.load_dataset("sb3-expo/pointmaze-umaze-expert-v0")
    assert dataset.total_episodes == 10
    assert dataset.spec.env_spec.id == ENV_ID and dataset.spec.env_spec.kwargs["continuing_task"] is False
    assert dataset.spec.env_spec.kwargs["maze_map"] == DEMO_ENV_KWARGS[ENV_ID]["maze_map"]
    episodes = list(dataset.iterate_episodes())
    assert set(episodes[0].observations) == {"observation", "achieved_goal", "desired_goal"}
    reached = [bool(ep.terminations[-1]) and ep.rewards[-1] == 1.0 and ep.rewards[:-1].sum() == 0 for ep in episodes]
    assert np.mean(reached) >= 0.8  # most episodes end at the goal with the sparse reward 1
    # what the replay buffer reads: Dict observations as they are
    from sb3_expo.wrappers import load_minari_dataset

    data = load_minari_dataset("sb3-expo/pointmaze-umaze-expert-v0")
    assert set(data.observations) == {"observation", "achieved_goal", "desired_goal"}
    assert data.rewards.sum() == sum(reached)
