"""Evaluation in both of EXPO's modes, recorded through SB3's logger (stdout, CSV, TensorBoard).

The paper evaluates EXPO with its stochastic on-the-fly policy; SB3 users (``evaluate_policy``, ``EvalCallback``,
rl_zoo3) evaluate with ``predict(deterministic=True)``. :class:`BothModesEvalCallback` records both, for EXPO or any
SB3 algorithm (for SAC the modes are the mean action and a sample)::

    from sb3_expo.callbacks import BothModesEvalCallback
    callback = BothModesEvalCallback(gym.make("Pendulum-v1"), eval_freq=1000, n_eval_episodes=10)
    model.learn(20_000, callback=callback)
    callback.history  # [(num_timesteps, {"deterministic": [returns...], "stochastic": [returns...]}), ...]

TensorBoard gets ``eval/deterministic_mean_reward``, ``eval/stochastic_mean_reward`` (and their ``_std_reward``).
The evaluation runs under :func:`torch.random.fork_rng`: the stochastic episodes draw from the global torch random
stream without moving it, so training with the callback is the same run as training without it.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

MODES = ("deterministic", "stochastic")


def evaluate_both_modes(
    model: BaseAlgorithm,
    env: Union[gym.Env, VecEnv],
    n_eval_episodes: int = 10,
    modes: Sequence[str] = MODES,
    seed: Optional[int] = None,
) -> dict[str, list[float]]:
    """Episode returns of ``model`` in each of ``modes``, the same reset seeds for every mode.

    :param model: any SB3 model.
    :param env: evaluation env (a Gymnasium env or a VecEnv with one env).
    :param n_eval_episodes: episodes per mode.
    :param modes: ``"deterministic"`` and/or ``"stochastic"``.
    :param seed: reset seed of the first episode of each mode (``None``: the env's own stream, continued).
    :return: ``{mode: [return per episode]}``.
    """
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown evaluation mode(s) {sorted(unknown)}; use {MODES}")
    if n_eval_episodes < 1:
        raise ValueError(f"n_eval_episodes must be >= 1, got {n_eval_episodes}")
    vec_env = env if isinstance(env, VecEnv) else DummyVecEnv([lambda: env])
    devices = [model.device] if model.device.type == "cuda" else []
    out: dict[str, list[float]] = {}
    with th.random.fork_rng(devices=devices):
        for mode in modes:
            if seed is not None:
                vec_env.seed(seed)
            returns, _ = evaluate_policy(
                model,
                vec_env,
                n_eval_episodes=n_eval_episodes,
                deterministic=mode == "deterministic",
                return_episode_rewards=True,
                warn=False,
            )
            out[mode] = [float(r) for r in returns]
    return out


class BothModesEvalCallback(BaseCallback):
    """Evaluate every ``eval_freq`` env steps in both modes; log ``eval/<mode>_mean_reward`` and keep a history.

    :param eval_env: evaluation env (Gymnasium env or a one-env VecEnv).
    :param eval_freq: env steps between evaluations (counted in ``num_timesteps``; also once at the start when
        ``eval_at_start``).
    :param n_eval_episodes: episodes per mode.
    :param modes: the modes to evaluate (both by default).
    :param seed: reset seed of each evaluation's first episode (the same episodes at every evaluation point);
        ``None`` continues the env's own stream.
    :param eval_at_start: also evaluate before the first env step.
    :param verbose: 1 prints one line per evaluation.
    """

    def __init__(
        self,
        eval_env: Union[gym.Env, VecEnv],
        eval_freq: int = 10_000,
        n_eval_episodes: int = 5,
        modes: Sequence[str] = MODES,
        seed: Optional[int] = 0,
        eval_at_start: bool = False,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if eval_freq < 1:
            raise ValueError(f"eval_freq must be >= 1 env step, got {eval_freq}")
        unknown = set(modes) - set(MODES)
        if unknown or not modes:
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {list(modes)}")
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.modes = tuple(modes)
        self.seed = seed
        self.eval_at_start = eval_at_start
        self.history: list[tuple[int, dict[str, list[float]]]] = []
        self._next_eval = 0

    def evaluate(self) -> dict[str, list[float]]:
        """Evaluate now, record into the logger and the history, and return the returns per mode."""
        returns = evaluate_both_modes(self.model, self.eval_env, self.n_eval_episodes, self.modes, self.seed)
        step = int(self.num_timesteps)
        self.history.append((step, returns))
        for mode, rets in returns.items():
            self.logger.record(f"eval/{mode}_mean_reward", float(np.mean(rets)))
            self.logger.record(f"eval/{mode}_std_reward", float(np.std(rets)))
        self.logger.record("time/total_timesteps", step, exclude="tensorboard")
        self.logger.dump(step)
        if self.verbose:
            text = "  ".join(f"{m} {np.mean(r):8.1f} +- {np.std(r):.1f}" for m, r in returns.items())
            print(f"Eval at {step} env steps: {text}")
        return returns

    def _on_training_start(self) -> None:
        self._next_eval = self.num_timesteps + self.eval_freq
        if self.eval_at_start:
            self.evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_eval:
            self._next_eval += self.eval_freq * (1 + (self.num_timesteps - self._next_eval) // self.eval_freq)
            self.evaluate()
        return True

    def curve(self, mode: str) -> list[tuple[int, float, float]]:
        """``(env steps, mean, std)`` of ``mode``'s evaluations so far."""
        return [(s, float(np.mean(r[mode])), float(np.std(r[mode]))) for s, r in self.history if mode in r]
