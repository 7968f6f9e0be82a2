"""BothModesEvalCallback: both evaluation modes into SB3's logger and TensorBoard, without changing the run."""

from __future__ import annotations

import glob

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC

from sb3_expo import EXPO, get_preset
from sb3_expo.callbacks import BothModesEvalCallback, evaluate_both_modes


def short_pendulum() -> gym.Env:
    return gym.make("Pendulum-v1", max_episode_steps=30)


def test_callback_logs_both_modes_to_tensorboard_and_keeps_a_history(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = EXPO("MlpPolicy", short_pendulum(), seed=0, tensorboard_log=str(tmp_path), **get_preset("tiny", learning_starts=20))
    callback = BothModesEvalCallback(short_pendulum(), eval_freq=40, n_eval_episodes=2, seed=5, eval_at_start=True)
    model.learn(80, callback=callback, tb_log_name="run")
    assert [step for step, _ in callback.history] == [0, 40, 80]
    for _, returns in callback.history:
        assert set(returns) == {"deterministic", "stochastic"} and all(len(r) == 2 for r in returns.values())
    events = EventAccumulator(glob.glob(str(tmp_path / "run_1"))[0])
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"eval/deterministic_mean_reward", "eval/stochastic_mean_reward"} <= tags
    logged = [e.value for e in events.Scalars("eval/deterministic_mean_reward")]
    np.testing.assert_allclose(logged, [np.mean(r["deterministic"]) for _, r in callback.history], rtol=1e-5)
    assert callback.curve("stochastic")[-1][0] == 80


def test_evaluation_does_not_change_the_training_run():
    """The stochastic episodes draw from the global torch stream inside fork_rng: a run with the callback ends with
    the same parameters as one without it."""

    def train(with_callback: bool) -> list[th.Tensor]:
        model = EXPO("MlpPolicy", short_pendulum(), seed=3, **get_preset("tiny", learning_starts=20))
        cb = BothModesEvalCallback(short_pendulum(), eval_freq=25, n_eval_episodes=1) if with_callback else None
        model.learn(60, callback=cb)
        return [p.detach().clone() for p in model.policy.parameters()]

    for a, b in zip(train(False), train(True)):
        assert th.equal(a, b)


def test_evaluate_both_modes_works_for_sac_and_repeats_with_a_seed():
    model = SAC("MlpPolicy", short_pendulum(), seed=0, learning_starts=10)
    first = evaluate_both_modes(model, short_pendulum(), n_eval_episodes=2, seed=1)
    again = evaluate_both_modes(model, short_pendulum(), n_eval_episodes=2, seed=1)
    assert first["deterministic"] == again["deterministic"]
    assert set(first) == {"deterministic", "stochastic"}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="eval_freq"):
        BothModesEvalCallback(short_pendulum(), eval_freq=0)
    with pytest.raises(ValueError, match="modes"):
        BothModesEvalCallback(short_pendulum(), modes=("greedy",))
    model = SAC("MlpPolicy", short_pendulum(), seed=0)
    with pytest.raises(ValueError, match="n_eval_episodes"):
        evaluate_both_modes(model, short_pendulum(), n_eval_episodes=0)
