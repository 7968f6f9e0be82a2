"""Sample-efficiency benchmark: EXPO against RLPD (``sb3_expo.RLPD``), SAC, imitation alone and EXPO's ablations.

Tasks (2-core CPU, data written locally by the project's dataset command, ``make_minari_dataset``, no download):

* ``pendulum``: Pendulum-v1 (dense reward) with a small mediocre Minari dataset (10 noisy scripted episodes);
* ``mountaincar``: MountainCarContinuous-v0 (+100 at the goal, small action penalty: sparse for the goal) with
  5 noisy scripted demos that reach the goal;
* ``pointmaze``: gymnasium-robotics ``PointMaze_UMaze-v3`` on its demo task (``DEMO_ENV_KWARGS``: fixed start and goal
  at the two ends of the U, reward 1 at the goal and 0 elsewhere, the episode ends at the goal, 300 steps at most):
  the sparse, long-horizon navigation task, local analogue of AntMaze, with 10 demos of the scripted waypoint
  controller. Its Dict observations are flattened (``observation``, ``desired_goal``) the same way on both sides:
  ``FlattenDictObservation`` on the env, ``obs_keys`` in the ``MinariReplayBuffer``.

Methods (same env-step budget, same offline data where they use it, same seeds). Every evaluation point runs both
modes on the same reset seeds: ``deterministic=True`` (what SB3's ``evaluate_policy`` and rl_zoo3 use) and
stochastic (the paper's evaluation of EXPO: the on-the-fly policy with fresh noise; for SAC/RLPD a sampled action).

Main methods (``MAIN_METHODS``: the full run):

* ``expo``: EXPO, ``cpu`` preset at batch 64 (``RunConfig.batch_size``, RLPD's too), 50/50 offline/online
  minibatches, base pretrained on the offline data;
* ``expo_online_data``: the same EXPO and buffer without pretraining (online RL with offline data, as RLPD);
* ``rlpd``: ``sb3_expo.RLPD`` (10 LayerNorm critics, min over a random pair in the target, mean over critics in the
  actor loss, entropy backup) with EXPO cpu's UTD (``gradient_steps``), batch size, critic width and warm-up, on the
  same 50/50 ``MinariReplayBuffer``; actor 256x256;
* ``sac``: SB3 SAC with its defaults, no data, at the ablations' shorter budget;
* ``base_only``: the pretrained diffusion base alone (EXPO with ``edit_scale=0, n_action_samples=1``, same
  pretraining), evaluated without any online step: imitation only;
* ``expo_best_of_n``: EXPO with ``edit_scale=0`` (best-of-N base samples, no edit policy);
* ``expo_random_select``: EXPO with ``selection="random"`` (no max-Q selection);
* ``expo_online_selector``: EXPO with ``selection_critic="online"`` (candidates scored by the online critics instead
  of the target ones: the control for optimistic bias).

Kept, not in the main run (``--methods``; their last results: docs/benchmarks.md): ``expo_no_data``
(``EXPO("MlpPolicy", env, **cpu preset)`` without a dataset) and the stability variants (EXPO with one setting
changed), the candidates for why returns fall back after a good phase:

* ``expo_no_warmup``: no random-action warm-up (``learning_starts=0``, as the main job);
* ``expo_ema_fast``: base EMA rate 0.005 instead of 0.001;
* ``expo_edit_small``: edit scale 0.05 (the authors' Robomimic value) instead of the cpu preset's 0.1;
* ``expo_utd4``: 4 critic updates per env step instead of the cpu preset's 2;
* ``expo_pretrained_critic``: critic and edit policy pretrained offline with the base (the paper starts them from
  scratch);
* ``expo_base_offline``: the base policy keeps training online on offline minibatches only, instead of the 50/50
  ones (it never imitates the online data).

Q overestimation: at every evaluation point, along the stochastic evaluation episodes, the critics' estimate of the
actions taken (min over a random pair of target critics: the value the TD target uses; and the mean over all target
critics) against the discounted Monte Carlo return from that step (``q_vs_return``).

Every (task, method, seed) run is cached as ``<cache>/runs/<task>/<method>/seed<k>.json`` (written after every
evaluation, with a checkpoint for resuming); a finished run is also copied to ``<results>/runs/`` (committed), and a
finished run found there is not run again. The tables are built from both::

    python -m bench.sample_efficiency --quick                       # smoke test: 1 seed, tiny budgets (a few minutes)
    python -m bench.sample_efficiency --seeds 0 1 2 3 4 --jobs 2    # the full run (resumable)
    python -m bench.sample_efficiency --report-only                 # tables + plots from the finished runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Optional

import numpy as np

if __package__ in (None, ""):  # ``python bench/sample_efficiency.py``: make ``bench`` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import (
    add_common_args, config_fields, exit_code, finish_run, load_json, resume, run_jobs, save_progress, write_json,
)
from bench.metrics import (
    Interval, bootstrap_ci, compare, curve_intervals, q_bias, ratio_to_reference, steps_to_threshold,
    steps_ratio_ci, steps_to_threshold_ci,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / "bench" / "cache"
DEFAULT_RESULTS = REPO / "bench" / "results"
FORMAT_VERSION = 3  # 2: both evaluation modes at every point; 3: sb3_expo.RLPD, Q-vs-return at every point
MODES = ("deterministic", "stochastic")
RETURNS_KEY = dict(deterministic="returns", stochastic="stochastic_returns")
POINTMAZE_KEYS = ("observation", "desired_goal")


@dataclasses.dataclass(frozen=True)
class Task:
    """One benchmark task: env, local dataset, budgets and the threshold for steps-to-threshold."""

    env_id: str
    dataset_id: str
    dataset_episodes: int
    dataset_quality: str
    steps: int  # env-step budget of every learning method
    eval_every: int
    threshold: float
    budgets: tuple[int, ...]  # steps at which the IQM table is reported (the last one = ``steps``)
    reward_kind: str
    methods: tuple[str, ...]
    obs_keys: Optional[tuple[str, ...]] = None  # Dict observations: flatten these keys (env and buffer alike)
    demo_task: bool = False  # gym.make with the env's DEMO_ENV_KWARGS (the task the demos are recorded on)
    # Training reward = env reward + reward_shift, online and offline (the AntMaze protocol of RLPD and EXPO: -1);
    # evaluation returns are the env's own reward.
    reward_shift: float = 0.0
    rlpd_kwargs: tuple[tuple[str, Any], ...] = ()  # RLPD's published settings for this kind of task, if any
    short_steps: Optional[int] = None  # budget of the SHORT_BUDGET_METHODS (None: ``steps``)

    def env_kwargs(self) -> dict[str, Any]:
        if not self.demo_task:
            return {}
        from sb3_expo.datasets import controllers

        return dict(getattr(controllers, "DEMO_ENV_KWARGS", {}).get(self.env_id, {}))


MAIN_METHODS = ("expo", "rlpd", "expo_online_data", "sac", "base_only", "expo_best_of_n", "expo_random_select",
                "expo_online_selector")  # fmt: skip
STABILITY_VARIANTS: dict[str, dict[str, Any]] = {
    "expo_no_warmup": dict(learning_starts=0),
    "expo_ema_fast": dict(base_ema_tau=0.005),
    "expo_edit_small": dict(edit_scale=0.05),
    "expo_utd4": dict(gradient_steps=4),
    "expo_pretrained_critic": {},  # pretrain(train_critic=True, train_edit=True)
    "expo_base_offline": {},  # OfflineBaseEXPO
}
# Task.short_steps: the ablations, and SAC, which uses no data (a reference point, far from every threshold there)
SHORT_BUDGET_METHODS = ("expo_best_of_n", "expo_random_select", "expo_online_selector", "sac")
EXTRA_METHODS = ("expo_no_data",) + tuple(STABILITY_VARIANTS)  # any task, only when named with --methods/--runs
TASKS: dict[str, Task] = {
    "pendulum": Task(
        env_id="Pendulum-v1",
        dataset_id="sb3-expo-bench/pendulum-medium-v0",
        dataset_episodes=10,
        dataset_quality="medium",
        steps=3000,
        eval_every=250,
        threshold=-300.0,
        budgets=(1000, 2000, 3000),
        reward_kind="dense",
        methods=MAIN_METHODS,
        short_steps=2000,
    ),
    "mountaincar": Task(
        env_id="MountainCarContinuous-v0",
        dataset_id="sb3-expo-bench/mountaincar-medium-v0",
        dataset_episodes=5,
        dataset_quality="medium",
        steps=5000,  # RLPD reaches the threshold at 3500
        eval_every=500,
        threshold=50.0,
        budgets=(1000, 2000, 5000),
        reward_kind="sparse (goal)",
        methods=MAIN_METHODS,
        short_steps=2000,
    ),
    "pointmaze": Task(
        env_id="PointMaze_UMaze-v3",
        dataset_id="sb3-expo-bench/pointmaze-umaze-expert-v0",
        dataset_episodes=10,
        dataset_quality="expert",
        steps=12500,  # RLPD reaches the threshold at 8750-11250
        eval_every=1250,
        threshold=0.5,
        budgets=(2500, 5000, 10000, 12500),  # the ablations: 2500
        reward_kind="sparse (1 at the goal), long horizon",
        methods=MAIN_METHODS,
        obs_keys=POINTMAZE_KEYS,
        demo_task=True,
        reward_shift=-1.0,  # RLPD's and EXPO's AntMaze protocol, for every method
        rlpd_kwargs=(("num_min_qs", 1), ("backup_entropy", False)),  # RLPD README, AntMaze
        short_steps=2500,
    ),
}
ALL_METHODS = MAIN_METHODS + EXTRA_METHODS
LABELS = {
    "expo": "EXPO",
    "expo_online_data": "EXPO online + data (no pretraining)",
    "rlpd": "RLPD",
    "sac": "SAC (no data)",
    "base_only": "base only (imitation)",
    "expo_best_of_n": "EXPO best-of-N (edit_scale=0)",
    "expo_random_select": "EXPO random select",
    "expo_online_selector": "EXPO online-critic selection",
    "expo_no_data": "EXPO (no data)",
    "expo_no_warmup": "EXPO, no random warm-up",
    "expo_ema_fast": "EXPO, base EMA 0.005",
    "expo_edit_small": "EXPO, edit scale 0.05",
    "expo_utd4": "EXPO, UTD 4",
    "expo_pretrained_critic": "EXPO, critic + edit pretrained",
    "expo_base_offline": "EXPO, base on offline data only",
}
EXPO_OVERRIDES: dict[str, dict[str, Any]] = {
    "expo": {},
    "expo_online_data": {},
    "expo_no_data": {},
    "expo_best_of_n": dict(edit_scale=0.0),
    "expo_random_select": dict(selection="random"),
    "expo_online_selector": dict(selection_critic="online"),
    "base_only": dict(edit_scale=0.0, n_action_samples=1, n_edit_samples=0),
    **STABILITY_VARIANTS,
}
OFFLINE_METHODS = set(ALL_METHODS) - {"sac", "expo_no_data"}
PRETRAINED_METHODS = set(ALL_METHODS) - {"sac", "rlpd", "expo_online_data", "expo_no_data"}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Budgets and settings shared by all runs of one invocation (part of each run's cache key)."""

    steps: Optional[int] = None  # None: the task's own
    eval_every: Optional[int] = None
    eval_episodes: int = 3
    static_eval_episodes: int = 10  # base_only: one evaluation (it does not learn)
    learning_starts: int = 300  # random-action warm-up, the same for every learning method
    pretrain_steps: int = 5000
    preset: str = "cpu"
    # Minibatch of EXPO and RLPD alike (None or 0: the preset's; cpu: 128). 64 costs about 30% less per env step
    # and brings the full run to 2.2 h, inside its 2.5 h on 2 cores; the UTD stays the preset's 2. SAC keeps SB3's.
    batch_size: Optional[int] = 64
    max_episode_steps: Optional[int] = None  # None: the env's own TimeLimit
    threads: int = 1

    def task_steps(self, task: Task, method: Optional[str] = None) -> int:
        """The env-step budget: ``--steps``, else the task's (the ablations' shorter one where the task has one)."""
        if self.steps:
            return self.steps
        return task.short_steps if (task.short_steps and method in SHORT_BUDGET_METHODS) else task.steps

    def batch_kwargs(self, method: Optional[str]) -> dict[str, int]:
        """``batch_size=...`` where the benchmark's batch applies (EXPO, RLPD; not SAC, nor a batch of None or 0)."""
        return {} if method == "sac" or not self.batch_size else {"batch_size": self.batch_size}

    def task_eval_every(self, task: Task) -> int:
        return self.eval_every or task.eval_every

    def key(self, task: Task, method: Optional[str] = None) -> dict[str, Any]:
        """What must match for a cached run to be reused."""
        return dict(
            version=FORMAT_VERSION,
            env_id=task.env_id,
            dataset_id=task.dataset_id,
            steps=self.task_steps(task, method),
            reward_shift=task.reward_shift,
            rlpd_kwargs=[list(kv) for kv in task.rlpd_kwargs] if method == "rlpd" else None,
            eval_every=self.task_eval_every(task),
            eval_episodes=self.eval_episodes,
            static_eval_episodes=self.static_eval_episodes,
            learning_starts=self.learning_starts,
            pretrain_steps=self.pretrain_steps,
            preset=self.preset,
            max_episode_steps=self.max_episode_steps,
            **self.batch_kwargs(method),  # only where it applies: SAC's runs hold whatever batch EXPO and RLPD use
        )


PER_POINT_FIELDS = ("steps", "returns", "episode_returns", "stochastic_returns", "episode_stochastic_returns",
                    "q_vs_return")  # fmt: skip


def holds_budget(record_key: Any, key: dict[str, Any]) -> bool:
    """Whether a run recorded under ``record_key`` holds the run that ``key`` asks for: the same settings with a
    budget at least as long. Nothing in a run depends on its total budget (it learns in chunks that end at the
    evaluation points, at constant learning rates), so up to a shorter budget that is a multiple of ``eval_every``
    its evaluations are exactly those of a run with that budget: a shortened benchmark reuses the longer runs."""
    if not isinstance(record_key, dict) or record_key.get("steps", -1) < key["steps"]:
        return False
    rest = {k: v for k, v in record_key.items() if k != "steps"}
    return rest == {k: v for k, v in key.items() if k != "steps"} and key["steps"] % key["eval_every"] == 0


def cut_to_budget(record: dict[str, Any], key: dict[str, Any]) -> dict[str, Any]:
    """The run of ``record`` up to ``key``'s budget (a copy, under ``key``; ``budget_of_record`` keeps the longer
    budget it was run with). Its timings are scaled to the steps kept."""
    if record.get("key") == key:
        return record
    if record.get("static"):  # base_only: one evaluation before any online step, whatever the budget
        return dict(record, key=key, budget_of_record=record["key"]["steps"])
    n = sum(1 for s in record["steps"] if s <= key["steps"])
    out = dict(record, key=key, budget_of_record=record["key"]["steps"])
    for field in PER_POINT_FIELDS:
        if field in record:
            out[field] = record[field][:n]
    out["complete"] = bool(n) and out["steps"][-1] == key["steps"]
    kept = out["steps"][-1] / max(record["steps"][-1], 1) if n else 0.0
    for field in ("train_seconds", "eval_seconds"):
        if field in record:
            out[field] = record[field] * kept
    return out


QUICK = dict(steps=200, eval_every=100, eval_episodes=1, static_eval_episodes=2, learning_starts=150,
             pretrain_steps=100, max_episode_steps=200)  # fmt: skip
TINY = dict(steps=60, eval_every=30, eval_episodes=1, static_eval_episodes=1, learning_starts=30, pretrain_steps=10,
            max_episode_steps=50, preset="tiny", batch_size=None)  # fmt: skip


# ---------------------------------------------------------------------------------------------------- datasets
def _register_robotics_envs(env_id: str) -> None:
    """gymnasium-robotics' envs (PointMaze) are registered by importing it; its import prints a notice: hidden."""
    import contextlib
    import io

    import gymnasium as gym

    if env_id in gym.registry:
        return
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        import gymnasium_robotics
    gym.register_envs(gymnasium_robotics)


def ensure_datasets(task_names: list[str], cache_dir: pathlib.Path) -> None:
    """Write each task's Minari dataset under ``<cache>/minari`` with the project's dataset command (idempotent)."""
    os.environ["MINARI_DATASETS_PATH"] = str(cache_dir / "minari")
    from sb3_expo.datasets.make_minari import episode_returns, make_minari_dataset

    for name in task_names:
        task = TASKS[name]
        _register_robotics_envs(task.env_id)
        ds = make_minari_dataset(task.env_id, task.dataset_id, n_episodes=task.dataset_episodes, seed=0,
                                 quality=task.dataset_quality, env_kwargs=task.env_kwargs() or None)  # fmt: skip
        rets = episode_returns(ds)
        print(f"dataset {task.dataset_id}: {ds.total_episodes} episodes, {ds.total_steps} steps, "
              f"return {rets.mean():.1f} (min {rets.min():.1f}, max {rets.max():.1f})", flush=True)  # fmt: skip


def dataset_summary(task: Task, cache_dir: pathlib.Path) -> dict[str, float]:
    os.environ["MINARI_DATASETS_PATH"] = str(cache_dir / "minari")
    import minari

    from sb3_expo.datasets.make_minari import episode_returns

    ds = minari.load_dataset(task.dataset_id)
    rets = episode_returns(ds)
    return dict(episodes=int(ds.total_episodes), transitions=int(ds.total_steps), mean_return=float(rets.mean()),
                min_return=float(rets.min()), max_return=float(rets.max()))  # fmt: skip


# ---------------------------------------------------------------------------------------------------- models
def make_env(task: Task, cfg: RunConfig, training: bool = False):
    """The task's env as the dataset was recorded (demo-task kwargs), Dict observations flattened like the buffer's;
    the training env's reward shifted by ``task.reward_shift`` (as the buffer shifts the offline rewards)."""
    import gymnasium as gym

    from sb3_expo.wrappers import FlattenDictObservation, ShiftScaleReward

    _register_robotics_envs(task.env_id)
    kwargs = task.env_kwargs()
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    env = gym.make(task.env_id, **kwargs)
    if training and task.reward_shift:
        env = ShiftScaleReward(env, shift=task.reward_shift)
    return FlattenDictObservation(env, keys=list(task.obs_keys)) if task.obs_keys else env


def build_model(method: str, task: Task, cfg: RunConfig, env: Any, seed: int) -> Any:
    """The model of one method (see the module docstring)."""
    from stable_baselines3 import SAC

    from sb3_expo import EXPO, RLPD
    from sb3_expo.presets import get_preset
    from sb3_expo.wrappers import MinariReplayBuffer

    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; known: {ALL_METHODS}")
    steps = cfg.task_steps(task, method)
    buffer_kwargs: dict[str, Any] = dict(dataset_id=task.dataset_id, offline_fraction=0.5)
    if task.reward_shift:
        buffer_kwargs["reward_shift"] = task.reward_shift
    if task.obs_keys:
        buffer_kwargs["obs_keys"] = list(task.obs_keys)
    offline = dict(replay_buffer_class=MinariReplayBuffer, replay_buffer_kwargs=buffer_kwargs)
    common = dict(learning_starts=cfg.learning_starts, buffer_size=max(steps, 1000), seed=seed, device="cpu", verbose=0)
    batch = cfg.batch_kwargs(method)
    preset = get_preset(cfg.preset, **batch)
    if method == "sac":
        return SAC("MlpPolicy", env, **common)
    if method == "rlpd":  # EXPO's UTD, batch, critic (10 LayerNorm members, same width), learning rate and buffer
        return RLPD(
            "MlpPolicy",
            env,
            batch_size=preset["batch_size"],
            gradient_steps=preset["gradient_steps"],
            learning_rate=preset.get("learning_rate", 3e-4),
            **dict(task.rlpd_kwargs),
            policy_kwargs=dict(n_critics=preset["policy_kwargs"]["n_critics"],
                               net_arch=dict(pi=[256, 256], qf=preset["policy_kwargs"]["critic_net_arch"])),  # fmt: skip
            **offline,
            **common,
        )
    kwargs = get_preset(cfg.preset, **{**common, **batch, **EXPO_OVERRIDES[method]})
    if method in OFFLINE_METHODS:
        kwargs.update(offline)
    cls = offline_base_expo() if method == "expo_base_offline" else EXPO
    return cls("MlpPolicy", env, **kwargs)


def model_class(method: str) -> type:
    from stable_baselines3 import SAC

    from sb3_expo import EXPO, RLPD

    return dict(sac=SAC, rlpd=RLPD).get(method) or (offline_base_expo() if method == "expo_base_offline" else EXPO)


def offline_base_expo() -> type:
    """EXPO whose base policy trains on offline minibatches only once online (the ``expo_base_offline`` variant):
    the critic and edit updates are EXPO's, on the 50/50 minibatches."""
    from sb3_expo import EXPO

    class OfflineBaseEXPO(EXPO):
        def train(self, gradient_steps: int, batch_size: int = 256) -> None:
            self.policy.set_training_mode(True)
            self._update_learning_rate([self.policy.critic_optimizer, self.policy.edit_optimizer])
            env = self._vec_normalize_env
            mixed = self.replay_buffer.sample(gradient_steps * batch_size, env=env)  # type: ignore[union-attr]
            stats = self._update(mixed, gradient_steps, batch_size, update_base=False)
            offline = self.replay_buffer.sample_offline(batch_size, env=env)  # type: ignore[union-attr]
            stats.update(self._update(offline, 1, batch_size, update_critic=False, update_edit=False))
            self._finish_update(stats, gradient_steps)

    return OfflineBaseEXPO


def describe_model(model: Any) -> dict[str, Any]:
    """The effective settings of a run (stored in its JSON, not part of the cache key): presets can change."""
    import sb3_expo

    info: dict[str, Any] = dict(
        algo=type(model).__name__,
        sb3_expo_version=getattr(sb3_expo, "__version__", "?"),
        gradient_steps=model.gradient_steps,
        batch_size=model.batch_size,
        learning_starts=model.learning_starts,
        learning_rate=float(model.learning_rate) if not callable(model.learning_rate) else "schedule",
        gamma=float(model.gamma),
        replay_buffer=type(model.replay_buffer).__name__,
        policy_kwargs={k: repr(v) for k, v in model.policy_kwargs.items()},
    )
    for name in ("otf_config", "diffusion_config"):
        if hasattr(model, name):
            info[name] = dataclasses.asdict(getattr(model, name))
    for name in ("num_min_qs", "backup_entropy", "target_entropy"):
        if hasattr(model, name) and not hasattr(model, "otf_config"):
            info[name] = repr(getattr(model, name))
    return info


def evaluate(model: Any, env: Any, episodes: int, seed: int, deterministic: bool = True,
             trace: Optional[list[dict[str, Any]]] = None) -> list[float]:  # fmt: skip
    """Undiscounted returns of ``episodes`` episodes; episode ``i`` resets with seed ``seed + i`` (the same eval
    seeds for every method, mode and evaluation point of one run seed). Stochastic episodes draw from a torch random
    stream seeded with ``seed`` inside :func:`torch.random.fork_rng`: repeatable, and training's stream is untouched.

    :param trace: if given, one dict per episode is appended: ``obs``, ``actions`` (as the env took them),
        ``rewards`` and ``terminated`` (the episode ended by a termination, not a time limit)
    """
    import torch as th

    returns = []
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            done, total, terminated = False, 0.0, False
            steps: dict[str, list] = dict(obs=[], actions=[], rewards=[])
            while not done:
                action, _ = model.predict(obs, deterministic=deterministic)
                if trace is not None:
                    steps["obs"].append(obs)
                    steps["actions"].append(action)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps["rewards"].append(float(reward))
                done = terminated or truncated
            returns.append(total)
            if trace is not None:
                trace.append(dict(steps, terminated=bool(terminated)))
    return returns


def critic_estimates(model: Any, obs: np.ndarray, actions: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The critics' estimates of ``Q(s, a)`` for a batch of (observation, action as the env took it).

    ``min_pair``: min over a random pair of TARGET critics, a fresh pair per row (the value EXPO's and RLPD's TD
    targets use; SB3 SAC: the min over its 2 target critics, its own target rule). ``mean_all``: mean over all target
    critics. ``bonus`` (soft critics: RLPD with ``backup_entropy``, SAC): the entropy bonus ``-alpha log pi(a|s)`` of
    each row, which their TD target adds to the return.
    """
    import torch as th
    from stable_baselines3 import SAC

    from sb3_expo import EXPO, RLPD

    policy = model.policy
    out: dict[str, np.ndarray] = {}
    with th.no_grad():
        obs_t, _ = policy.obs_to_tensor(obs)
        act = th.as_tensor(policy.scale_action(np.asarray(actions)), dtype=th.float32, device=policy.device)
        if isinstance(model, EXPO):
            critic = policy.q_ensemble_target
            qs = critic(critic.features_extractor(policy.preprocess(obs_t)), act)
        elif isinstance(model, RLPD):
            qs = policy.q_values(policy.critic_target, obs_t, act)
        elif isinstance(model, SAC):
            qs = th.cat(policy.critic_target(obs_t, act), dim=1).T
        else:
            raise TypeError(f"no critic estimate for {type(model).__name__}")
        if isinstance(model, SAC) and (not isinstance(model, RLPD) or model.backup_entropy):
            mean, log_std, kwargs = policy.actor.get_action_dist_params(obs_t)
            log_prob = policy.actor.action_dist.proba_distribution(mean, log_std, **kwargs).log_prob(act)
            alpha = model.alpha() if isinstance(model, RLPD) else th.exp(model.log_ent_coef.detach()) \
                if model.log_ent_coef is not None else model.ent_coef_tensor  # fmt: skip
            out["bonus"] = (-alpha * log_prob).cpu().numpy().ravel()
    q = qs.cpu().numpy().astype(np.float64)  # (E, B)
    rng = np.random.default_rng(seed)
    pairs = np.argsort(rng.random((q.shape[1], q.shape[0])), axis=1)[:, :2] if q.shape[0] > 2 else None
    out["min_pair"] = q.min(axis=0) if pairs is None else np.minimum(q[pairs[:, 0], np.arange(q.shape[1])],
                                                                        q[pairs[:, 1], np.arange(q.shape[1])])  # fmt: skip
    out["mean_all"] = q.mean(axis=0)
    return out


def q_vs_return(model: Any, episodes: list[dict[str, Any]], seed: int = 0, reward_shift: float = 0.0) -> dict[str, Any]:
    """Q overestimation along evaluation episodes: the critics' estimate of the actions taken minus the discounted
    Monte Carlo return from that step (gamma of the model; soft critics against the soft return), averaged over the
    steps :func:`bench.metrics.q_bias` counts (all of a terminated episode, the first half of a truncated one).
    ``reward_shift``: the training reward's shift (the critics estimate the shifted return; episodes hold env rewards)."""
    parts: dict[str, list[np.ndarray]] = dict(bias_min_pair=[], bias_mean_all=[], q_min_pair=[], mc_return=[])
    soft = False
    for i, ep in enumerate(episodes):
        obs = ep["obs"]
        batch = {k: np.stack([o[k] for o in obs]) for k in obs[0]} if isinstance(obs[0], dict) else np.stack(obs)
        q = critic_estimates(model, batch, np.stack(ep["actions"]), seed=seed + i)
        soft = "bonus" in q
        for name in ("min_pair", "mean_all"):
            rewards = np.asarray(ep["rewards"]) + reward_shift
            bias, g = q_bias(q[name], rewards, model.gamma, ep["terminated"], q.get("bonus"))
            parts[f"bias_{name}"].append(bias)
        parts["q_min_pair"].append(q["min_pair"][: len(bias)])
        parts["mc_return"].append(g)
    out: dict[str, Any] = {k: float(np.mean(np.concatenate(v))) for k, v in parts.items()}
    out.update(n_steps=int(sum(len(b) for b in parts["bias_min_pair"])), soft_return=soft)
    return out


def record_evaluation(record: dict[str, Any], model: Any, env: Any, episodes: int, seed: int,
                      reward_shift: float = 0.0) -> None:  # fmt: skip
    """Evaluate in both modes and append the step, the mean returns and the episode returns of each mode; for a model
    with critics, the Q-vs-return measurement of the stochastic episodes (``record["q_vs_return"]``)."""
    record["steps"].append(int(model.num_timesteps))
    with_critic = not record.get("static")
    for mode in MODES:
        trace: Optional[list] = [] if (mode == "stochastic" and with_critic) else None
        rets = evaluate(model, env, episodes, seed, deterministic=mode == "deterministic", trace=trace)
        record.setdefault(RETURNS_KEY[mode], []).append(float(np.mean(rets)))
        record.setdefault(f"episode_{RETURNS_KEY[mode]}", []).append(rets)
        if trace:
            record.setdefault("q_vs_return", []).append(q_vs_return(model, trace, seed, reward_shift))


# ---------------------------------------------------------------------------------------------------- one run
def run_path(cache_dir: pathlib.Path, task: str, method: str, seed: int) -> pathlib.Path:
    return cache_dir / "runs" / task / method / f"seed{seed}.json"


def final_model_path(run_json: pathlib.Path) -> pathlib.Path:
    """Where a completed EXPO run keeps its trained model (beside its JSON, in the cache)."""
    return run_json.with_suffix(".final.zip")


def publish(record: dict[str, Any], runs_dir: Optional[pathlib.Path]) -> None:
    """Copy a finished run's JSON to ``<runs_dir>/<task>/<method>/seed<k>.json`` (the committed copy)."""
    if runs_dir is not None and record.get("complete"):
        write_json(runs_dir / record["task"] / record["method"] / f"seed{record['seed']}.json", record)


def run_one(task_name: str, method: str, seed: int, cfg: RunConfig, cache_dir: str,
            runs_dir: Optional[str] = None) -> dict[str, Any]:  # fmt: skip
    """Train and evaluate one (task, method, seed); resume from its checkpoint, or return the finished result (from
    the cache or from ``runs_dir``, the committed runs). A finished run is copied to ``runs_dir``."""
    import torch as th

    from sb3_expo import EXPO

    th.set_num_threads(cfg.threads)
    cache = pathlib.Path(cache_dir)
    published = pathlib.Path(runs_dir) if runs_dir else None
    os.environ["MINARI_DATASETS_PATH"] = str(cache / "minari")
    task = TASKS[task_name]
    key = cfg.key(task, method)
    path = run_path(cache, task_name, method, seed)
    tag = f"[{task_name}/{method}/seed{seed}]"
    for candidate in ([path] + ([published / task_name / method / f"seed{seed}.json"] if published else [])):
        done = load_json(candidate)
        if done is not None and holds_budget(done.get("key"), key) and done.get("complete"):
            print(f"{tag} finished already ({candidate.parent.parent.parent.name}/)", flush=True)
            publish(done, published)  # as run (a longer run stays whole)
            return cut_to_budget(done, key)
    old = load_json(path)
    if old is not None and old.get("key") != key and holds_budget(old.get("key"), key) and old.get("steps"):
        # An interrupted run with a longer budget: its evaluations so far are this run's; it ends at this budget.
        old = cut_to_budget(old, key)
        if old["complete"]:
            write_json(path, old)
            publish(old, published)
            return old

    steps, eval_every = cfg.task_steps(task, method), cfg.task_eval_every(task)
    env, eval_env = make_env(task, cfg, training=True), make_env(task, cfg)
    eval_seed = 10_000 + 100 * seed
    cls = model_class(method)
    record: dict[str, Any]
    start = time.time()
    model = resume(cls, old, key, path, env, seed, tag)
    if model is not None:
        record = old  # type: ignore[assignment]
        prior_time = float(record.get("train_seconds", 0.0))
    else:
        model = build_model(method, task, cfg, env, seed)
        record = dict(task=task_name, method=method, seed=seed, key=key, steps=[], returns=[], episode_returns=[],
                      complete=False, torch_threads=th.get_num_threads(), model=describe_model(model))  # fmt: skip
        prior_time = 0.0
        if method in PRETRAINED_METHODS:
            t0 = time.time()
            critic = method == "expo_pretrained_critic"
            model.pretrain(cfg.pretrain_steps, train_critic=critic, train_edit=critic, progress_bar=False,
                           log_interval=10**9)  # fmt: skip
            record["pretrain_seconds"] = time.time() - t0
        if method == "base_only":  # imitation only: one evaluation, no online step
            record.update(steps=[], returns=[], episode_returns=[], static=True, complete=True, train_seconds=0.0)
            record_evaluation(record, model, eval_env, cfg.static_eval_episodes, eval_seed)
            write_json(path, record)
            publish(record, published)
            print(f"{tag} base only: return {record['returns'][0]:.1f} (stochastic {record['stochastic_returns'][0]:.1f})"
                  f" over {cfg.static_eval_episodes} episodes", flush=True)  # fmt: skip
            return record
        t0 = time.time()
        record_evaluation(record, model, eval_env, cfg.eval_episodes, eval_seed, task.reward_shift)
        record["eval_seconds"] = time.time() - t0
        write_json(path, record)

    train_time = 0.0
    while model.num_timesteps < steps:
        chunk = min(eval_every - model.num_timesteps % eval_every, steps - model.num_timesteps)
        t0 = time.time()
        model.learn(chunk, reset_num_timesteps=model.num_timesteps == 0, progress_bar=False)
        train_time += time.time() - t0
        t0 = time.time()
        record_evaluation(record, model, eval_env, cfg.eval_episodes, eval_seed, task.reward_shift)
        record["eval_seconds"] = record.get("eval_seconds", 0.0) + time.time() - t0
        record["train_seconds"] = prior_time + train_time
        save_progress(model, record, path, steps)
        q = record["q_vs_return"][-1]
        print(f"{tag} step {model.num_timesteps}: return {record['returns'][-1]:.1f} (stochastic "
              f"{record['stochastic_returns'][-1]:.1f}; Q - G {q['bias_min_pair']:+.1f} min pair, "
              f"{q['bias_mean_all']:+.1f} mean) ({(time.time() - start):.0f} s wall)", flush=True)  # fmt: skip
    if isinstance(model, EXPO):  # the trained model, for bench/deterministic_modes.py
        model.save(final_model_path(path))
    finish_run(record, path, steps)
    publish(record, published)
    return record


# ---------------------------------------------------------------------------------------------------- report
def collect(cache_dir: pathlib.Path, cfg: RunConfig, task_names: list[str],
            runs_dir: Optional[pathlib.Path] = None) -> dict[str, dict[str, list[dict]]]:  # fmt: skip
    """Runs whose key matches ``cfg``, by task and method: the finished ones of ``runs_dir`` (committed), and the
    cache's (complete or not; a cached run replaces a committed one only if it is complete or there is none)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for name in task_names:
        task = TASKS[name]
        out[name] = {}
        for method in ALL_METHODS:
            by_seed: dict[int, dict] = {}
            for root, finished_only in ((runs_dir, True), (cache_dir / "runs", False)):
                if root is None:
                    continue
                for p in sorted((root / name / method).glob("seed*.json")):
                    r = load_json(p)
                    if r is None or not holds_budget(r.get("key"), cfg.key(task, method)) or not r.get("steps"):
                        continue
                    r = cut_to_budget(r, cfg.key(task, method))
                    if (finished_only and not r.get("complete")) or (r["seed"] in by_seed and not r.get("complete")):
                        continue
                    by_seed[r["seed"]] = r
            if by_seed:
                out[name][method] = [by_seed[k] for k in sorted(by_seed)]
    return out


MIN_SEEDS_FOR_VERDICT = 3  # below this, no win/tie/lose call is made
SHORT_VERDICTS = {"wins": "higher", "loses": "lower", "ties": "tie", "too_few": f"n<{MIN_SEEDS_FOR_VERDICT}"}
VERDICTS = {
    "wins": "EXPO higher (CIs disjoint)",
    "loses": "EXPO lower (CIs disjoint)",
    "ties": "tie (CIs overlap)",
    "too_few": f"no call (< {MIN_SEEDS_FOR_VERDICT} seeds)",
}


def _value_at(run: dict, step: int) -> Optional[float]:
    if run.get("static"):
        return float(run["returns"][0])
    if step in run["steps"]:
        return float(run["returns"][run["steps"].index(step)])
    return None


def _fmt_steps(x: Optional[float]) -> str:
    return "not reached" if x is None else f"{int(x)}"


def _fmt_ratio(r: Optional[float], who: str = "EXPO", own_steps: Optional[float] = None) -> str:
    """RLPD's steps over ``who``'s: None when ``who`` never reaches the threshold, inf when RLPD does not or when
    ``who`` is there from step 0 (``own_steps == 0``: its pretrained base already is)."""
    if r is None:
        return f"n/a ({who} did not reach it)"
    if math.isinf(r):
        return f"inf ({who} at it from step 0)" if own_steps == 0 else "inf (RLPD did not reach it)"
    return f"{r:.2f}"


def worst_after_reaching(steps: list[int], returns: list[float], threshold: float) -> Optional[float]:
    """The lowest evaluation at or after the first one that reaches ``threshold`` (None if never reached):
    how far a run falls back after a good phase."""
    for i, r in enumerate(returns):
        if r >= threshold:
            return float(min(returns[i:]))
    return None


def in_mode(runs: dict[str, list[dict]], mode: str) -> dict[str, list[dict]]:
    """The runs with ``returns`` holding ``mode``'s evaluations (runs without that mode are left out)."""
    key = RETURNS_KEY[mode]
    return {m: [dict(r, returns=r[key]) for r in rs if key in r] for m, rs in runs.items() if any(key in r for r in rs)}


def complete_matrix(runs: list[dict]) -> tuple[Optional[list[int]], list[list[float]]]:
    """The evaluation grid and the curves of the complete runs that share it (for the bootstrap of steps to threshold)."""
    done = [r for r in runs if r.get("complete") and not r.get("static")]
    if not done:
        return None, []
    grid = max(done, key=lambda r: len(r["steps"]))["steps"]
    return grid, [r["returns"] for r in done if r["steps"] == grid]


def analyse(task_name: str, runs: dict[str, list[dict]], cfg: RunConfig, mode: str = "deterministic",
            threshold: Optional[float] = None) -> dict[str, Any]:  # fmt: skip
    """Per-method IQM intervals at the budgets, steps to threshold (with bootstrap intervals over the complete runs),
    the ratio to RLPD's, stability and the EXPO verdicts of one task, in one evaluation mode (``threshold``: instead
    of the task's)."""
    runs = in_mode(runs, mode)
    task = TASKS[task_name]
    thr = task.threshold if threshold is None else threshold
    steps = cfg.task_steps(task)
    budgets = sorted({b for b in task.budgets if b <= steps} | {steps})
    res: dict[str, Any] = dict(task=task_name, env_id=task.env_id, threshold=thr, budgets=budgets,
                               steps=steps, mode=mode, methods={})  # fmt: skip
    for method, rs in runs.items():
        m: dict[str, Any] = dict(n_runs=len(rs), n_complete=sum(bool(r.get("complete")) for r in rs),
                                 seeds=sorted(r["seed"] for r in rs), at={})  # fmt: skip
        for b in budgets:
            vals = [v for v in (_value_at(r, b) for r in rs) if v is not None]
            m["at"][b] = bootstrap_ci(vals) if vals else None
        if rs[0].get("static"):
            value = bootstrap_ci([r["returns"][0] for r in rs])
            m["curve"] = (np.array([0.0, float(steps)]), [value, value])
            m["threshold_steps_iqm"] = 0.0 if value.point >= thr else None
            share = float(np.mean([r["returns"][0] >= thr for r in rs]))
            m["share_above"] = (np.array([0.0, float(steps)]), [share, share])
            m["threshold_steps_ci"] = None
        else:
            grid, curve = curve_intervals([(r["steps"], r["returns"]) for r in rs])
            m["curve"] = (grid, curve)
            m["threshold_steps_iqm"] = steps_to_threshold(grid, [c.point for c in curve], thr)
            m["share_above"] = (grid, [float(np.mean([v >= thr for v in (_value_at(r, int(g)) for r in rs)
                                                       if v is not None])) for g in grid])  # fmt: skip
            full_grid, rows = complete_matrix(rs)
            m["threshold_steps_ci"] = steps_to_threshold_ci(full_grid, rows, thr) if rows else None
        per_seed = [
            (0.0 if r["returns"][0] >= thr else None) if r.get("static")
            else steps_to_threshold(r["steps"], r["returns"], thr)
            for r in rs if r.get("complete")
        ]  # fmt: skip
        worst = [w for w in (worst_after_reaching(r["steps"], r["returns"], thr)
                             for r in rs if r.get("complete") and not r.get("static")) if w is not None]  # fmt: skip
        m["worst_after_reaching"] = bootstrap_ci(worst) if worst else None
        m["threshold_reached"] = sum(s is not None for s in per_seed)
        m["threshold_of"] = len(per_seed)
        m["threshold_steps_median"] = (
            float(np.median([math.inf if s is None else s for s in per_seed])) if per_seed else None
        )
        if m["threshold_steps_median"] is not None and math.isinf(m["threshold_steps_median"]):
            m["threshold_steps_median"] = None
        m["seconds_per_step"] = (
            float(np.mean([r["seconds_per_step"] for r in rs if "seconds_per_step" in r]))
            if any("seconds_per_step" in r for r in rs) else None
        )  # fmt: skip
        res["methods"][method] = m
    expo, rlpd = res["methods"].get("expo"), res["methods"].get("rlpd")
    for method, m in res["methods"].items():
        m["ratio_to_expo"] = ratio_to_reference(m["threshold_steps_iqm"], expo["threshold_steps_iqm"]) if expo else None
        # RLPD's steps / this method's: above 1 = fewer env steps than RLPD (None: this method never gets there)
        m["rlpd_steps_over_these"] = (ratio_to_reference(rlpd["threshold_steps_iqm"], m["threshold_steps_iqm"])
                                      if rlpd else None)  # fmt: skip
        m["steps_vs_rlpd"] = steps_verdict(m, rlpd) if (rlpd and method != "rlpd") else None
        if expo and method != "expo":
            m["expo_vs"] = {}
            for b in budgets:
                ref, other = expo["at"].get(b), m["at"].get(b)
                if ref is not None and other is not None:
                    enough = min(ref.n, other.n) >= MIN_SEEDS_FOR_VERDICT
                    m["expo_vs"][b] = compare(ref, other) if enough else "too_few"
    if rlpd:  # RLPD's steps / each method's, with its bootstrap interval (complete runs on RLPD's grid)
        grid_r, rows_r = complete_matrix(runs["rlpd"])
        for method, m in res["methods"].items():
            grid_m, rows_m = complete_matrix(runs[method])
            ok = method != "rlpd" and rows_m and rows_r and grid_m == grid_r
            m["rlpd_steps_over_these_ci"] = steps_ratio_ci(grid_r, rows_m, rows_r, thr) if ok else None
    res["ratio_to_rlpd"] = expo["rlpd_steps_over_these"] if (expo and rlpd) else None
    res["ratio_to_rlpd_ci"] = None
    res["paper_target"] = None
    if expo and rlpd:
        if expo["rlpd_steps_over_these_ci"] is not None:
            res["ratio_to_rlpd_ci"] = expo["rlpd_steps_over_these_ci"]
            ci_e, ci_r = expo["threshold_steps_ci"], rlpd["threshold_steps_ci"]
            disjoint = ci_e.high < ci_r.low
            ratio = res["ratio_to_rlpd_ci"].point
            enough = min(ci_e.n, ci_r.n) >= MIN_SEEDS_FOR_VERDICT
            res["paper_target"] = dict(ratio_at_least_2=bool(ratio >= 2.0), intervals_disjoint=bool(disjoint),
                                       met=bool(ratio >= 2.0 and disjoint and enough), enough_seeds=bool(enough),
                                       expo_from_start=bool(ci_e.point == 0.0), seeds=min(ci_e.n, ci_r.n))  # fmt: skip
    base = res["methods"].get("base_only")
    res["imitation_reaches"] = bool(base is not None and base["threshold_steps_iqm"] == 0.0)
    res["verdict"] = expo["steps_vs_rlpd"] if (expo and rlpd) else None
    sac, no_data = res["methods"].get("sac"), res["methods"].get("expo_no_data")
    if sac and no_data and sac["at"].get(steps) and no_data["at"].get(steps):
        a, b = no_data["at"][steps], sac["at"][steps]
        res["no_data_vs_sac"] = compare(a, b) if min(a.n, b.n) >= MIN_SEEDS_FOR_VERDICT else "too_few"
    return res


def steps_verdict(m: dict[str, Any], rlpd: dict[str, Any]) -> str:
    """A method against RLPD on env steps to the threshold, from the bootstrap intervals over complete seeds:
    ``beats`` (its interval lies below RLPD's: fewer steps), ``loses`` (above), ``ties`` (they overlap), ``too_few``
    (fewer than MIN_SEEDS_FOR_VERDICT complete seeds on either side)."""
    a, b = m.get("threshold_steps_ci"), rlpd.get("threshold_steps_ci")
    if m.get("threshold_of") and m["threshold_steps_iqm"] == 0.0 and m.get("threshold_steps_ci") is None:
        a = Interval(0.0, 0.0, 0.0, m["threshold_of"])  # base_only: one evaluation, at step 0
    if a is None or b is None or min(a.n, b.n) < MIN_SEEDS_FOR_VERDICT:
        return "too_few"
    return "beats" if a.high < b.low else ("loses" if a.low > b.high else "ties")


def beyond_data(task_name: str, runs: dict[str, list[dict]], cfg: RunConfig, mode: str, res: dict[str, Any],
                dataset: Optional[dict[str, float]]) -> Optional[dict[str, Any]]:  # fmt: skip
    """Where imitation alone meets the task's threshold, steps to the best demonstration's return instead (when
    imitation does not reach that one): what the online phase adds beyond copying the data. None elsewhere."""
    base = res["methods"].get("base_only")
    if not (dataset and res.get("imitation_reaches") and base and "rlpd" in res["methods"]):
        return None
    thr = float(dataset["max_return"])
    if base["at"][res["steps"]].point >= thr:
        return None  # imitation reaches the best demo too (e.g. a success rate of 1): nothing to measure beyond it
    b = analyse(task_name, runs, cfg, mode, threshold=thr)
    return dict(threshold=thr, ratio_to_rlpd=b["ratio_to_rlpd"], ratio_to_rlpd_ci=b["ratio_to_rlpd_ci"],
                paper_target=b["paper_target"], verdict=b["verdict"], imitation_reaches=b["imitation_reaches"],
                methods={m: {k: v for k, v in d.items() if k not in ("curve", "share_above")}
                         for m, d in b["methods"].items()})  # fmt: skip


VERDICT_WORDS = dict(beats="beats", loses="loses", ties="ties", too_few=f"no call (n<{MIN_SEEDS_FOR_VERDICT})")


def _verdict_cell(res: dict[str, Any], method: str = "expo") -> str:
    m = res["methods"].get(method)
    if m is None or m.get("steps_vs_rlpd") is None:
        return "-"
    word = VERDICT_WORDS[m["steps_vs_rlpd"]]
    if method == "expo" and res.get("imitation_reaches") and m["threshold_steps_iqm"] == 0.0:
        word += " (by imitation: the pretrained base is at it before any online step)"
    return word


def _fmt_interval_steps(iv: Optional[Interval]) -> str:
    if iv is None:
        return "-"
    f = lambda x: "never" if math.isinf(x) else f"{x:.0f}"  # noqa: E731
    return f"{f(iv.point)} [{f(iv.low)}, {f(iv.high)}] (n={iv.n})"


def _fmt_ratio_interval(iv: Optional[Interval]) -> str:
    if iv is None:
        return "-"
    f = lambda x: "inf" if math.isinf(x) else f"{x:.2f}"  # noqa: E731
    return f"{f(iv.point)} [{f(iv.low)}, {f(iv.high)}]"


def _target_verdict(target: Optional[dict]) -> str:
    if target is None:
        return "-"
    if not target["enough_seeds"]:
        return f"no call (n<{MIN_SEEDS_FOR_VERDICT})"
    verdict = "met" if target["met"] else "not met"
    return verdict + (" (EXPO at the threshold from step 0: its pretrained base is)" if target["expo_from_start"] else "")


def markdown(analyses: list[dict], cfg: RunConfig, datasets: dict[str, dict]) -> str:
    lines = []
    for res in analyses:
        task = TASKS[res["task"]]
        ds = datasets.get(res["task"], {})
        lines += [
            f"### {res['task']}: {task.env_id} ({task.reward_kind} reward), {res['mode']} evaluation",
            "",
            f"Dataset `{task.dataset_id}`: {ds.get('episodes', '?')} episodes, {ds.get('transitions', '?')} transitions, "
            f"mean return {ds.get('mean_return', float('nan')):.2f}. Budget {res['steps']} env steps, evaluation every "
            f"{cfg.task_eval_every(task)} steps ({cfg.eval_episodes} {res['mode']} episodes), "
            f"threshold {res['threshold']:g}.",
            "",
        ]
        target = res.get("paper_target")
        ratio = _fmt_ratio_interval(res.get("ratio_to_rlpd_ci"))
        if target is not None:
            lines += [f"**EXPO vs RLPD, steps to {res['threshold']:g}:** RLPD's / EXPO's = {ratio} (95% bootstrap "
                      f"interval, {target['seeds']}+ complete seeds each). Paper's claim (ratio >= 2 with disjoint "
                      f"steps intervals): **{_target_verdict(target)}** (ratio >= 2: "
                      f"{'yes' if target['ratio_at_least_2'] else 'no'}; intervals disjoint: "
                      f"{'yes' if target['intervals_disjoint'] else 'no'}).", ""]  # fmt: skip
        else:
            lines += [f"**EXPO vs RLPD, steps to {res['threshold']:g}:** ratio "
                      f"{_fmt_ratio(res.get('ratio_to_rlpd'))} (IQM curves; no interval: too few complete runs).", ""]
        lines += [f"**EXPO vs RLPD, steps:** {_verdict_cell(res)}.", ""]
        beyond = res.get("beyond_data")
        if beyond:
            e = beyond["methods"].get("expo", {})
            r = beyond["methods"].get("rlpd", {})
            lines += [f"**Beyond the best demonstration ({beyond['threshold']:.4g}, which imitation alone does not "
                      f"reach):** EXPO {_fmt_interval_steps(e.get('threshold_steps_ci')) if e else '-'} steps, "
                      f"RLPD {_fmt_interval_steps(r.get('threshold_steps_ci')) if r else '-'}; RLPD's / EXPO's = "
                      f"{_fmt_ratio_interval(beyond.get('ratio_to_rlpd_ci'))}: EXPO {_verdict_cell(beyond)} RLPD.", ""]
        lines += [
            "IQM of the evaluation return over seeds [bootstrap 95% interval] (n = seeds with that evaluation):",
            "",
            "| method | " + " | ".join(f"{b} steps" for b in res["budgets"])
            + f" | steps to {res['threshold']:g}: IQM curve [95% CI] | RLPD's steps / these | seeds reaching it | "
            "worst eval after reaching it (IQM over those seeds) | EXPO vs it at "
            + " / ".join(str(b) for b in res["budgets"]) + " |",
            "|---|" + "---|" * len(res["budgets"]) + "---|---|---|---|---|",
        ]
        order = [m for m in ALL_METHODS if m in res["methods"]]
        for method in order:
            m = res["methods"][method]
            cells = []
            for b in res["budgets"]:
                iv: Optional[Interval] = m["at"].get(b)
                cells.append("-" if iv is None else f"{iv.fmt()} (n={iv.n})")
            verdict = " / ".join(SHORT_VERDICTS[m["expo_vs"][b]] if b in m.get("expo_vs", {}) else "-"
                                 for b in res["budgets"]) if method != "expo" else "-"  # fmt: skip
            reach = f"{m['threshold_reached']}/{m['threshold_of']}"
            worst = m.get("worst_after_reaching")
            worst_cell = "-" if worst is None else f"{worst.fmt()} (n={worst.n})"
            steps_cell = _fmt_interval_steps(m.get("threshold_steps_ci")) if m.get("threshold_steps_ci") else \
                _fmt_steps(m["threshold_steps_iqm"])  # fmt: skip
            lines.append(
                f"| {LABELS[method]} | " + " | ".join(cells)
                + f" | {steps_cell} | {_fmt_ratio(m.get('rlpd_steps_over_these'), 'this method', m['threshold_steps_iqm'])}"
                f" | {reach} | {worst_cell} | {verdict} |"
            )
        if "no_data_vs_sac" in res:
            lines += ["", f"Without data, EXPO vs SAC at {res['steps']} steps: "
                      + VERDICTS[res["no_data_vs_sac"]].replace("EXPO", "EXPO (no data)") + "."]
        lines += ["", "EXPO vs it: `higher` / `lower` = EXPO's interval lies above / below the method's (disjoint 95% "
                  f"intervals), `tie` = they overlap, `n<{MIN_SEEDS_FOR_VERDICT}` = too few seeds for a call. "
                  "Steps to the threshold: first evaluation at which the IQM curve over seeds reaches it; the interval "
                  "bootstraps the seeds of the complete runs (`never`: the resampled IQM curve does not get there "
                  "within the budget). RLPD's steps / these: above 1 = fewer env steps than RLPD. Seeds reaching it: "
                  "seeds whose own evaluation curve reaches the threshold at least once (complete runs only). Worst "
                  "eval after reaching it: per seed, the lowest evaluation at or after the first that reaches the "
                  "threshold (stability: how far a run falls back)."]  # fmt: skip
        lines += ["", f"![{res['task']} {res['mode']}](sample_efficiency_{res['task']}_{res['mode']}.png)", ""]
    return "\n".join(lines)


COLORS = dict(expo="C0", sac="C1", rlpd="C2", base_only="C7", expo_best_of_n="C4", expo_random_select="C5",
              expo_no_data="C3", expo_online_data="C9", expo_online_selector="C6")  # fmt: skip


def plot(res: dict, out: pathlib.Path, learning_starts: Optional[int] = None) -> None:
    """Left: IQM eval return over seeds with its 95% bootstrap band. Right: share of seeds at or above the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = TASKS[res["task"]]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw=dict(width_ratios=[3, 2]))
    for method in [m for m in ALL_METHODS if m in res["methods"] and m in task.methods]:  # variants: table only
        m = res["methods"][method]
        grid, curve = m["curve"]
        pts = np.array([c.point for c in curve])
        lo, hi = np.array([c.low for c in curve]), np.array([c.high for c in curve])
        n = max(c.n for c in curve)
        style = "--" if method == "base_only" else "-"
        marker = None if method == "base_only" else "."
        ax.plot(grid, pts, style, color=COLORS[method], label=f"{LABELS[method]} (n={n})", marker=marker)
        ax.fill_between(grid, lo, hi, color=COLORS[method], alpha=0.12)
        sgrid, share = m["share_above"]
        ax2.plot(sgrid, share, style, color=COLORS[method], marker=marker)
    for a in (ax, ax2):
        if learning_starts:
            a.axvline(learning_starts, color="0.5", lw=0.8, ls="-.")
        a.set_xlabel("env steps")
        a.grid(alpha=0.3)
    ax.axhline(res["threshold"], color="k", lw=0.8, ls=":", label=f"threshold {res['threshold']:g}")
    if res.get("beyond_data"):
        thr = res["beyond_data"]["threshold"]
        ax.axhline(thr, color="k", lw=0.8, ls="--", alpha=0.6, label=f"best demo {thr:.4g}")
    if learning_starts:
        ax.plot([], [], color="0.5", lw=0.8, ls="-.", label=f"random warm-up ends ({learning_starts})")
    ax.set_ylabel("eval return: IQM over seeds, 95% bootstrap band")
    ax.set_title(f"{task.env_id} ({task.reward_kind} reward), {res['mode']} evaluation")
    ax2.set_ylabel(f"share of seeds with eval return >= {res['threshold']:g}")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_title("seeds at or above the threshold")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _jsonable(res: dict) -> dict:
    def conv(x: Any) -> Any:
        if isinstance(x, Interval):
            return conv(dataclasses.asdict(x))
        if isinstance(x, dict):
            return {str(k): conv(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        if isinstance(x, np.ndarray):
            return x.tolist()
        if isinstance(x, float) and math.isinf(x):
            return "inf"
        return x

    return conv(res)


Q_AGGREGATES = (("bias_min_pair", "min over a random pair of target critics (the TD target's value)"),
                ("bias_mean_all", "mean over all target critics"))  # fmt: skip


def analyse_q(task_name: str, runs: dict[str, list[dict]]) -> dict[str, Any]:
    """Q overestimation of one task: per method and evaluation step, the IQM over seeds [95% bootstrap interval] of
    the mean (Q - G) along the stochastic evaluation episodes, for both aggregates of the critics; and the mean G."""
    out: dict[str, Any] = dict(task=task_name, methods={})
    for method, rs in runs.items():
        rs = [r for r in rs if r.get("q_vs_return")]
        if not rs:
            continue
        by_step: dict[int, list[dict]] = {}
        for r in rs:
            for step, q in zip(r["steps"], r["q_vs_return"]):
                by_step.setdefault(int(step), []).append(q)
        m: dict[str, Any] = dict(steps=sorted(by_step), soft_return=bool(rs[0]["q_vs_return"][0].get("soft_return")))
        for name, _ in Q_AGGREGATES + (("mc_return", ""),):
            m[name] = [bootstrap_ci([q[name] for q in by_step[k]]) for k in m["steps"]]
        out["methods"][method] = m
    return out


def q_markdown(qres: dict, budgets: list[int]) -> list[str]:
    """The Q-overestimation table of one task at the budgets."""
    task = qres["task"]
    lines = [f"### {task}: Q overestimation along the stochastic evaluation episodes", "",
             "Mean of (Q - G) over the steps of the evaluation episodes (all steps of an episode that terminates, the "
             "first half of one cut by the time limit), IQM over seeds [95% bootstrap interval]; G = discounted Monte "
             "Carlo return from that step with the model's gamma (for SAC and RLPD, whose TD target backs up the "
             "entropy bonus, the soft return). Positive = the critic over-estimates the actions the policy takes. "
             "Mean G gives the scale.", "",
             "| method | aggregate | " + " | ".join(f"{b} steps" for b in budgets) + " | mean G at the last |",
             "|---|---|" + "---|" * len(budgets) + "---|"]  # fmt: skip
    for method in [m for m in ALL_METHODS if m in qres["methods"]]:
        m = qres["methods"][method]
        for name, label in Q_AGGREGATES:
            cells = []
            for b in budgets:
                iv = m[name][m["steps"].index(b)] if b in m["steps"] else None
                cells.append("-" if iv is None else f"{iv.fmt(2)} (n={iv.n})")
            g = m["mc_return"][-1]
            lines.append(f"| {LABELS[method]} | {label.split(' (')[0]} | " + " | ".join(cells) + f" | {g.point:.2f} |")
    lines += ["", f"![{task} Q overestimation](q_overestimation_{task}.png)", ""]
    return lines


def plot_q(qres: dict, out: pathlib.Path) -> None:
    """Mean (Q - G) per evaluation point, IQM over seeds with its 95% band: one panel per critic aggregate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = TASKS[qres["task"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, (name, label) in zip(axes, Q_AGGREGATES):
        for method in [m for m in ALL_METHODS if m in qres["methods"]]:
            m = qres["methods"][method]
            ivs = m[name]
            n = max(iv.n for iv in ivs)
            soft = " (vs soft G)" if m["soft_return"] else ""
            ax.plot(m["steps"], [iv.point for iv in ivs], ".-", color=COLORS.get(method, "k"),
                    label=f"{LABELS[method]}{soft} (n={n})")  # fmt: skip
            ax.fill_between(m["steps"], [iv.low for iv in ivs], [iv.high for iv in ivs], color=COLORS.get(method, "k"),
                            alpha=0.12)  # fmt: skip
        ax.axhline(0.0, color="k", lw=0.8, ls=":")
        ax.set_title(f"Q: {label}", fontsize=10)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean (Q - G) along stochastic eval episodes\nIQM over seeds, 95% bootstrap band")
    fig.suptitle(f"{task.env_id}: critic estimate minus discounted Monte Carlo return")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run_seconds(run: dict[str, Any]) -> float:
    """Wall seconds of one run: pretraining, training and evaluation (scaled to the budget for a longer run)."""
    return float(sum(run.get(k, 0.0) for k in ("pretrain_seconds", "train_seconds", "eval_seconds")))


def compute_table(data: dict[str, dict[str, list[dict]]], task_names: list[str], seeds: int = 5) -> list[str]:
    """What the full run costs: measured seconds per task and method (complete runs; mean, and the fastest run, the
    closest to a machine without other load), a method's missing seeds counted at those, and the wall time of the
    whole at 2 runs side by side."""
    lines = ["Wall seconds per run (pretraining + training + evaluation; 1 torch thread each, 2 runs side by side on "
             "the 2-core CPU), mean / fastest over the complete runs:", "",
             "| method | " + " | ".join(task_names) + f" | {seeds} seeds of every task (missing seeds counted at the "
             "mean / fastest) |",
             "|---|" + "---|" * len(task_names) + "---|"]  # fmt: skip
    total = np.zeros(2)
    for method in MAIN_METHODS:
        cells, method_total = [], np.zeros(2)
        for name in task_names:
            done = [run_seconds(r) for r in data.get(name, {}).get(method, []) if r.get("complete")]
            if not done:
                cells.append("-")
                continue
            cells.append(f"{np.mean(done):.0f} / {min(done):.0f} (n={len(done)})")
            method_total += np.array([np.mean(done), min(done)]) * max(seeds, len(done))
        total += method_total
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + f" | {method_total[0]:.0f} / {method_total[1]:.0f} |")
    hours = total / 2 / 3600
    lines += ["", f"All methods: {total[0]:.0f} / {total[1]:.0f} s of runs, so **{hours[0]:.1f} h** (means) / "
              f"**{hours[1]:.1f} h** (fastest runs) of wall time with `--jobs 2` (`bench/run_full.sh`); a cell without "
              "a complete run counts 0. A run that shared the machine with other work (tests, another benchmark) "
              "besides its partner is slower: the fastest run is the closest to an idle machine.", ""]  # fmt: skip
    return lines


def report(task_names: list[str], cfg: RunConfig, cache_dir: pathlib.Path, results_dir: pathlib.Path) -> str:
    """Tables (markdown + JSON) and plots per task, from the finished runs of ``<results>/runs`` and the cache."""
    results_dir.mkdir(parents=True, exist_ok=True)
    data = collect(cache_dir, cfg, task_names, results_dir / "runs")
    analyses, q_analyses, datasets = [], [], {}
    q_lines: list[str] = []
    for name in task_names:
        if not data[name]:
            print(f"report: no runs for {name} with these settings", flush=True)
            continue
        try:
            datasets[name] = dataset_summary(TASKS[name], cache_dir)
        except Exception as e:  # the table does not need it
            print(f"report: could not read the {name} dataset ({e})", flush=True)
        for mode in MODES:
            res = analyse(name, data[name], cfg, mode)
            if not res["methods"]:
                continue
            res["beyond_data"] = beyond_data(name, data[name], cfg, mode, res, datasets.get(name))
            plot(res, results_dir / f"sample_efficiency_{name}_{mode}.png", cfg.learning_starts)
            analyses.append(res)
        qres = analyse_q(name, data[name])
        if qres["methods"]:
            plot_q(qres, results_dir / f"q_overestimation_{name}.png")
            q_analyses.append(qres)
            steps = cfg.task_steps(TASKS[name])
            q_lines += q_markdown(qres, sorted({b for b in TASKS[name].budgets if b <= steps} | {steps}))
    summary = ["| task | mode | threshold | RLPD's steps / EXPO's: IQM curves of all runs (bootstrap 95% CI over the "
               "complete runs) | EXPO vs RLPD, steps | paper's claim (>= 2, disjoint) | RLPD's steps / EXPO online + "
               "data's (no pretraining: RLPD's setting) | EXPO online + data vs RLPD, steps |",
               "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for res in analyses:
        rows = [(res["task"], res)]
        if res.get("beyond_data"):
            rows.append((f"{res['task']}, beyond the best demo", dict(res["beyond_data"], steps=res["steps"])))
        for label, r in rows:
            ci = r.get("ratio_to_rlpd_ci")
            ci_cell = f" (complete runs: {_fmt_ratio_interval(ci)}, n={ci.n})" if ci else ""
            expo, online = r["methods"].get("expo"), r["methods"].get("expo_online_data")
            expo_cell = _fmt_ratio(r.get("ratio_to_rlpd"), "EXPO", expo["threshold_steps_iqm"] if expo else None)
            online_cell = "-" if online is None else _fmt_ratio(online.get("rlpd_steps_over_these"),
                                                                "EXPO online + data", online["threshold_steps_iqm"])
            if online is not None and online.get("rlpd_steps_over_these_ci"):
                online_cell += f" (complete runs: {_fmt_ratio_interval(online['rlpd_steps_over_these_ci'])})"
            summary.append(f"| {label} | {res['mode']} | {r['threshold']:.4g} | {expo_cell}{ci_cell} | "
                           f"{_verdict_cell(r)} | {_target_verdict(r.get('paper_target'))} | {online_cell} | "
                           f"{_verdict_cell(r, 'expo_online_data')} |")
    summary += ["", "EXPO vs RLPD, steps: `beats` / `loses` = EXPO's bootstrap interval of env steps to the threshold "
                "lies below / above RLPD's, `ties` = they overlap. *Beyond the best demo*: where imitation alone meets "
                "the task's threshold, the same comparison at the best demonstration's return, which imitation does "
                "not reach: what the online phase adds beyond copying the data."]  # fmt: skip
    compute = compute_table(data, task_names)
    n_runs = sum(len(rs) for t in data.values() for rs in t.values())
    n_done = sum(bool(r.get("complete")) for t in data.values() for rs in t.values() for r in rs)
    text = "\n".join([
        "# Sample efficiency (generated by `python -m bench.sample_efficiency`)",
        "",
        f"Runs: {n_done} finished, {n_runs - n_done} unfinished (their evaluations so far count in the curves and "
        "the budget tables, not in the steps-to-threshold intervals).",
        "",
        f"Settings: {json.dumps(dataclasses.asdict(cfg))}",
        "",
        "## EXPO vs RLPD: steps to threshold",
        "",
        *summary,
        "",
        "## Returns",
        "",
        markdown(analyses, cfg, datasets),
        "## Q overestimation",
        "",
        *q_lines,
        "## Compute",
        "",
        *compute,
    ])  # fmt: skip
    (results_dir / "sample_efficiency.md").write_text(text)
    per_run = {name: {m: [dict(seed=r["seed"], complete=r.get("complete"), steps=r["steps"], returns=r["returns"],
                               stochastic_returns=r.get("stochastic_returns"),
                               seconds_per_step=r.get("seconds_per_step")) for r in rs]
                      for m, rs in data[name].items()} for name in data}  # fmt: skip
    analyses_json = [_jsonable({k: v for k, v in a.items() if k != "methods"})
                     | {"methods": {m: _jsonable({k: v for k, v in d.items() if k not in ("curve", "share_above")})
                                    for m, d in a["methods"].items()}} for a in analyses]  # fmt: skip
    (results_dir / "sample_efficiency.json").write_text(json.dumps(
        dict(settings=dataclasses.asdict(cfg), datasets=datasets, analyses=analyses_json, runs=per_run), indent=1))
    (results_dir / "q_overestimation.json").write_text(json.dumps(dict(
        note="mean (Q - G) along the stochastic evaluation episodes per evaluation step: IQM over seeds with 95% "
             "bootstrap intervals; bias_min_pair: min over a random pair of target critics, bias_mean_all: mean over "
             "all target critics; soft_return: G includes the entropy bonus (SAC, RLPD)",
        tasks=[_jsonable(q) for q in q_analyses]), indent=1))  # fmt: skip
    print(text, flush=True)
    return text


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=None, choices=list(ALL_METHODS),
                   help="default: the main methods (expo_no_data and the stability variants only when named)")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0..4 (quick: 0)")
    p.add_argument("--steps", type=int, default=None, help="env-step budget for every task (default: the task's)")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-episodes", type=int, default=None)
    p.add_argument("--learning-starts", type=int, default=None)
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="EXPO's and RLPD's minibatch (default 64; 0: the preset's)")
    p.add_argument("--max-episode-steps", type=int, default=None, help="override the env's TimeLimit (quick mode)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 seed, tiny budgets (a few minutes)")
    p.add_argument("--tiny", action="store_true", help="even smaller than --quick (tests): tiny preset, ~60 steps")
    p.add_argument("--runs", nargs="+", default=None, metavar="TASK/METHOD/SEED",
                   help="explicit runs in this priority order (instead of --tasks x --methods x --seeds)")  # fmt: skip
    add_common_args(p)
    p.add_argument("--cache-dir", type=pathlib.Path, default=DEFAULT_CACHE)
    p.add_argument("--results-dir", type=pathlib.Path, default=None,
                   help="default: bench/results (quick/tiny: <cache-dir>/quick_results)")  # fmt: skip
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    names = ("steps", "eval_every", "eval_episodes", "learning_starts", "pretrain_steps", "max_episode_steps", "preset",
             "batch_size")  # fmt: skip
    return RunConfig(**config_fields(args, names, TINY if args.tiny else (QUICK if args.quick else {})))


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    import torch as th

    th.set_num_threads(args.threads)
    cfg = config_from_args(args)
    cache_dir = args.cache_dir.resolve()
    results_dir = args.results_dir or (cache_dir / "quick_results" if (args.quick or args.tiny) else DEFAULT_RESULTS)
    seeds = args.seeds if args.seeds is not None else ([0] if (args.quick or args.tiny) else [0, 1, 2, 3, 4])
    print(f"torch threads per process: {th.get_num_threads()} | jobs: {args.jobs} | seeds: {seeds} | "
          f"settings: {dataclasses.asdict(cfg)}", flush=True)  # fmt: skip
    failures: list[str] = []
    if not args.report_only:
        ensure_datasets(sorted({r.split("/")[0] for r in args.runs}) if args.runs else args.tasks, cache_dir)
        # Seed-major order, then task, then method: partial results stay balanced across methods.
        todo = [(t, m, s) for s in seeds for t in args.tasks for m in (args.methods or TASKS[t].methods)
                if m in TASKS[t].methods or m in EXTRA_METHODS]  # fmt: skip
        if args.runs:
            todo = []
            for spec in args.runs:
                t, m, s = spec.split("/")
                if t not in TASKS or (m not in TASKS[t].methods and m not in EXTRA_METHODS):
                    raise SystemExit(f"--runs: unknown task/method in {spec!r}")
                todo.append((t, m, int(s)))
        t0 = time.time()
        failures = run_jobs(run_one, todo, (cfg, str(cache_dir), str(results_dir / "runs")), args.jobs)
        print(f"{len(todo)} runs done in {time.time() - t0:.0f} s", flush=True)
    report(args.tasks, cfg, cache_dir, results_dir)
    return exit_code(failures)


if __name__ == "__main__":
    sys.exit(main())
