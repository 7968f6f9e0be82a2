"""Sample-efficiency benchmark: EXPO beside SAC, an RLPD-style SAC, the imitation-only base and EXPO's ablations.

Tasks (2-core CPU, data written locally by ``sb3_expo.datasets.make_minari``, no download):

* ``pendulum``: Pendulum-v1 (dense reward) with a small mediocre Minari dataset (10 noisy scripted episodes);
* ``mountaincar``: MountainCarContinuous-v0 (+100 at the goal, small action penalty: sparse for the goal) with
  5 noisy scripted demos that reach the goal.

Methods (same env-step budget, same offline data where they use it, same seeds). Every evaluation point runs both
modes on the same reset seeds: ``deterministic=True`` (what SB3's ``evaluate_policy`` and rl_zoo3 use) and
stochastic (the paper's evaluation of EXPO: the on-the-fly policy with fresh noise; for SAC a sampled action).

* ``expo``: EXPO, ``cpu`` preset, 50/50 offline/online minibatches, base pretrained on the offline data;
* ``sac``: SB3 SAC with its defaults, no data;
* ``rlpd``: SB3 SAC with the same 50/50 ``MinariReplayBuffer``, 10 critics, EXPO cpu's UTD (2), batch (128) and
  critic width. Not full RLPD: SB3 SAC has no LayerNorm critics and takes the min over ALL 10 critics (RLPD: a
  random subset of 2) in the target and in the actor loss (RLPD: the mean);
* ``base_only``: the pretrained diffusion base alone (EXPO with ``edit_scale=0, n_action_samples=1``, same
  pretraining), evaluated without any online step: imitation only;
* ``expo_best_of_n``: EXPO with ``edit_scale=0`` (best-of-N base samples, no edit policy);
* ``expo_random_select``: EXPO with ``selection="random"`` (no max-Q selection);
* ``expo_no_data`` (dense task only): ``EXPO("MlpPolicy", env, **cpu preset)`` without a dataset.

Stability variants (EXPO with one setting changed; run them with ``--methods``, any task), the candidates for why
returns fall back after a good phase:

* ``expo_no_warmup``: no random-action warm-up (``learning_starts=0``, as the main job);
* ``expo_ema_fast``: base EMA rate 0.005 instead of 0.001;
* ``expo_edit_small``: edit scale 0.05 (the authors' Robomimic value) instead of the cpu preset's 0.1;
* ``expo_utd4``: 4 critic updates per env step instead of the cpu preset's 2;
* ``expo_pretrained_critic``: critic and edit policy pretrained offline with the base (the paper starts them from
  scratch);
* ``expo_base_offline``: the base policy keeps training online on offline minibatches only, instead of the 50/50
  ones (it never imitates the online data).

Every (task, method, seed) run is cached as ``<cache>/runs/<task>/<method>/seed<k>.json`` (written after every
evaluation, with a checkpoint for resuming), so the table can be built over several invocations::

    python -m bench.sample_efficiency --quick                       # smoke test: 1 seed, tiny budgets (~2-3 min)
    python -m bench.sample_efficiency --seeds 0 1 2 3 4 --jobs 2    # the full run (resumable)
    python -m bench.sample_efficiency --report-only                 # table + plots from whatever is cached
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
from bench.metrics import Interval, bootstrap_ci, compare, curve_intervals, ratio_to_reference, steps_to_threshold

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / "bench" / "cache"
DEFAULT_RESULTS = REPO / "bench" / "results"
FORMAT_VERSION = 2  # 2: both evaluation modes at every point
MODES = ("deterministic", "stochastic")
RETURNS_KEY = dict(deterministic="returns", stochastic="stochastic_returns")


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


MAIN_METHODS = ("expo", "sac", "rlpd", "base_only", "expo_best_of_n", "expo_random_select")
STABILITY_VARIANTS: dict[str, dict[str, Any]] = {
    "expo_no_warmup": dict(learning_starts=0),
    "expo_ema_fast": dict(base_ema_tau=0.005),
    "expo_edit_small": dict(edit_scale=0.05),
    "expo_utd4": dict(gradient_steps=4),
    "expo_pretrained_critic": {},  # pretrain(train_critic=True, train_edit=True)
    "expo_base_offline": {},  # OfflineBaseEXPO
}
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
        methods=MAIN_METHODS + ("expo_no_data",),
    ),
    "mountaincar": Task(
        env_id="MountainCarContinuous-v0",
        dataset_id="sb3-expo-bench/mountaincar-medium-v0",
        dataset_episodes=5,
        dataset_quality="medium",
        steps=1500,
        eval_every=500,
        threshold=50.0,
        budgets=(500, 1000, 1500),
        reward_kind="sparse (goal)",
        methods=MAIN_METHODS,
    ),
}
ALL_METHODS = MAIN_METHODS + ("expo_no_data",) + tuple(STABILITY_VARIANTS)
LABELS = {
    "expo": "EXPO",
    "sac": "SAC (no data)",
    "rlpd": "RLPD-style SAC",
    "base_only": "base only (imitation)",
    "expo_best_of_n": "EXPO best-of-N (edit_scale=0)",
    "expo_random_select": "EXPO random select",
    "expo_no_data": "EXPO (no data)",
    "expo_no_warmup": "EXPO, no random warm-up",
    "expo_ema_fast": "EXPO, base EMA 0.005",
    "expo_edit_small": "EXPO, edit scale 0.05",
    "expo_utd4": "EXPO, UTD 4",
    "expo_pretrained_critic": "EXPO, critic + edit pretrained",
    "expo_base_offline": "EXPO, base on offline data only",
}
OFFLINE_METHODS = {"expo", "rlpd", "base_only", "expo_best_of_n", "expo_random_select", *STABILITY_VARIANTS}
PRETRAINED_METHODS = {"expo", "base_only", "expo_best_of_n", "expo_random_select", *STABILITY_VARIANTS}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Budgets and settings shared by all runs of one invocation (part of each run's cache key)."""

    steps: Optional[int] = None  # None: the task's own
    eval_every: Optional[int] = None
    eval_episodes: int = 3
    static_eval_episodes: int = 10  # base_only: one evaluation (it does not learn)
    learning_starts: int = 300  # random-action warm-up, the same for every learning method
    pretrain_steps: int = 2000
    preset: str = "cpu"
    max_episode_steps: Optional[int] = None  # None: the env's own TimeLimit
    threads: int = 1

    def task_steps(self, task: Task) -> int:
        return self.steps or task.steps

    def task_eval_every(self, task: Task) -> int:
        return self.eval_every or task.eval_every

    def key(self, task: Task) -> dict[str, Any]:
        """What must match for a cached run to be reused."""
        return dict(
            version=FORMAT_VERSION,
            env_id=task.env_id,
            dataset_id=task.dataset_id,
            steps=self.task_steps(task),
            eval_every=self.task_eval_every(task),
            eval_episodes=self.eval_episodes,
            static_eval_episodes=self.static_eval_episodes,
            learning_starts=self.learning_starts,
            pretrain_steps=self.pretrain_steps,
            preset=self.preset,
            max_episode_steps=self.max_episode_steps,
        )


QUICK = dict(steps=200, eval_every=100, eval_episodes=1, static_eval_episodes=2, learning_starts=150,
             pretrain_steps=100, max_episode_steps=200)  # fmt: skip
TINY = dict(steps=60, eval_every=30, eval_episodes=1, static_eval_episodes=1, learning_starts=30, pretrain_steps=10,
            max_episode_steps=50, preset="tiny")  # fmt: skip


# ---------------------------------------------------------------------------------------------------- datasets
def ensure_datasets(task_names: list[str], cache_dir: pathlib.Path) -> None:
    """Write each task's Minari dataset under ``<cache>/minari`` with the project's dataset command (idempotent)."""
    os.environ["MINARI_DATASETS_PATH"] = str(cache_dir / "minari")
    from sb3_expo.datasets.make_minari import episode_returns, make_minari_dataset

    for name in task_names:
        task = TASKS[name]
        ds = make_minari_dataset(
            task.env_id, task.dataset_id, n_episodes=task.dataset_episodes, seed=0, quality=task.dataset_quality
        )
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
def make_env(task: Task, cfg: RunConfig):
    import gymnasium as gym

    kwargs = {} if cfg.max_episode_steps is None else dict(max_episode_steps=cfg.max_episode_steps)
    return gym.make(task.env_id, **kwargs)


def build_model(method: str, task: Task, cfg: RunConfig, env: Any, seed: int) -> Any:
    """The model of one method (see the module docstring)."""
    from stable_baselines3 import SAC

    from sb3_expo import EXPO
    from sb3_expo.presets import get_preset
    from sb3_expo.wrappers import MinariReplayBuffer

    steps = cfg.task_steps(task)
    offline = dict(
        replay_buffer_class=MinariReplayBuffer,
        replay_buffer_kwargs=dict(dataset_id=task.dataset_id, offline_fraction=0.5),
    )
    common = dict(learning_starts=cfg.learning_starts, buffer_size=max(steps, 1000), seed=seed, device="cpu", verbose=0)
    preset = get_preset(cfg.preset)
    if method == "sac":
        return SAC("MlpPolicy", env, **common)
    if method == "rlpd":
        critic = preset["policy_kwargs"]["critic_net_arch"]
        return SAC(
            "MlpPolicy",
            env,
            batch_size=preset["batch_size"],
            gradient_steps=preset["gradient_steps"],
            learning_rate=preset.get("learning_rate", 3e-4),
            policy_kwargs=dict(n_critics=preset["policy_kwargs"]["n_critics"], net_arch=dict(pi=[256, 256], qf=critic)),
            **offline,
            **common,
        )
    overrides: dict[str, Any] = {}
    if method == "expo_best_of_n":
        overrides = dict(edit_scale=0.0)
    elif method == "expo_random_select":
        overrides = dict(selection="random")
    elif method == "base_only":
        overrides = dict(edit_scale=0.0, n_action_samples=1, n_edit_samples=0)
    elif method in STABILITY_VARIANTS:
        overrides = dict(STABILITY_VARIANTS[method])
    elif method not in ("expo", "expo_no_data"):
        raise ValueError(f"unknown method {method!r}; known: {ALL_METHODS}")
    kwargs = get_preset(cfg.preset, **{**common, **overrides})
    if method != "expo_no_data":
        kwargs.update(offline)
    cls = offline_base_expo() if method == "expo_base_offline" else EXPO
    return cls("MlpPolicy", env, **kwargs)


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
        replay_buffer=type(model.replay_buffer).__name__,
        policy_kwargs={k: repr(v) for k, v in model.policy_kwargs.items()},
    )
    for name in ("otf_config", "diffusion_config"):
        if hasattr(model, name):
            info[name] = dataclasses.asdict(getattr(model, name))
    return info


def evaluate(model: Any, env: Any, episodes: int, seed: int, deterministic: bool = True) -> list[float]:
    """Undiscounted returns of ``episodes`` episodes; episode ``i`` resets with seed ``seed + i`` (the same eval
    seeds for every method, mode and evaluation point of one run seed). Stochastic episodes draw from a torch random
    stream seeded with ``seed`` inside :func:`torch.random.fork_rng`: repeatable, and training's stream is untouched."""
    import torch as th

    returns = []
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            done, total = False, 0.0
            while not done:
                action, _ = model.predict(obs, deterministic=deterministic)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    return returns


def record_evaluation(record: dict[str, Any], model: Any, env: Any, episodes: int, seed: int) -> None:
    """Evaluate in both modes and append the step, the mean returns and the episode returns of each mode."""
    record["steps"].append(int(model.num_timesteps))
    for mode in MODES:
        rets = evaluate(model, env, episodes, seed, deterministic=mode == "deterministic")
        record.setdefault(RETURNS_KEY[mode], []).append(float(np.mean(rets)))
        record.setdefault(f"episode_{RETURNS_KEY[mode]}", []).append(rets)


# ---------------------------------------------------------------------------------------------------- one run
def run_path(cache_dir: pathlib.Path, task: str, method: str, seed: int) -> pathlib.Path:
    return cache_dir / "runs" / task / method / f"seed{seed}.json"


def final_model_path(run_json: pathlib.Path) -> pathlib.Path:
    """Where a completed EXPO run keeps its trained model (beside its JSON, in the cache)."""
    return run_json.with_suffix(".final.zip")


def run_one(task_name: str, method: str, seed: int, cfg: RunConfig, cache_dir: str) -> dict[str, Any]:
    """Train and evaluate one (task, method, seed); resume from its checkpoint, or return the cached result."""
    import torch as th
    from stable_baselines3 import SAC

    from sb3_expo import EXPO

    th.set_num_threads(cfg.threads)
    cache = pathlib.Path(cache_dir)
    os.environ["MINARI_DATASETS_PATH"] = str(cache / "minari")
    task = TASKS[task_name]
    key = cfg.key(task)
    path = run_path(cache, task_name, method, seed)
    tag = f"[{task_name}/{method}/seed{seed}]"
    old = load_json(path)
    if old is not None and old.get("key") == key and old.get("complete"):
        print(f"{tag} cached", flush=True)
        return old

    steps, eval_every = cfg.task_steps(task), cfg.task_eval_every(task)
    env, eval_env = make_env(task, cfg), make_env(task, cfg)
    eval_seed = 10_000 + 100 * seed
    cls = SAC if method in ("sac", "rlpd") else (offline_base_expo() if method == "expo_base_offline" else EXPO)
    record: dict[str, Any]
    start = time.time()
    model = resume(cls, old, key, path, env, seed, tag)
    if model is not None:
        record = old
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
            print(f"{tag} base only: return {record['returns'][0]:.1f} (stochastic {record['stochastic_returns'][0]:.1f})"
                  f" over {cfg.static_eval_episodes} episodes", flush=True)  # fmt: skip
            return record
        record_evaluation(record, model, eval_env, cfg.eval_episodes, eval_seed)
        write_json(path, record)

    train_time = 0.0
    while model.num_timesteps < steps:
        chunk = min(eval_every - model.num_timesteps % eval_every, steps - model.num_timesteps)
        t0 = time.time()
        model.learn(chunk, reset_num_timesteps=model.num_timesteps == 0, progress_bar=False)
        train_time += time.time() - t0
        record_evaluation(record, model, eval_env, cfg.eval_episodes, eval_seed)
        record["train_seconds"] = prior_time + train_time
        save_progress(model, record, path, steps)
        print(f"{tag} step {model.num_timesteps}: return {record['returns'][-1]:.1f} (stochastic "
              f"{record['stochastic_returns'][-1]:.1f}) ({(time.time() - start):.0f} s wall)", flush=True)  # fmt: skip
    if cls is EXPO:  # the trained model, for bench/deterministic_modes.py
        model.save(final_model_path(path))
    finish_run(record, path, steps)
    return record


# ---------------------------------------------------------------------------------------------------- report
def collect(cache_dir: pathlib.Path, cfg: RunConfig, task_names: list[str]) -> dict[str, dict[str, list[dict]]]:
    """Cached runs whose key matches ``cfg`` (complete or not), by task and method."""
    out: dict[str, dict[str, list[dict]]] = {}
    for name in task_names:
        task = TASKS[name]
        out[name] = {}
        for method in task.methods + tuple(STABILITY_VARIANTS):
            runs = []
            for p in sorted((cache_dir / "runs" / name / method).glob("seed*.json")):
                r = load_json(p)
                if r is not None and r.get("key") == cfg.key(task) and r.get("steps"):
                    runs.append(r)
            if runs:
                out[name][method] = runs
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


def _fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return "n/a (EXPO did not reach it)"
    if math.isinf(r):
        return "inf (not reached)"
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


def analyse(task_name: str, runs: dict[str, list[dict]], cfg: RunConfig, mode: str = "deterministic") -> dict[str, Any]:
    """Per-method IQM intervals at the budgets, steps to threshold, stability and the EXPO verdicts of one task, in
    one evaluation mode."""
    runs = in_mode(runs, mode)
    task = TASKS[task_name]
    steps = cfg.task_steps(task)
    budgets = sorted({b for b in task.budgets if b <= steps} | {steps})
    res: dict[str, Any] = dict(task=task_name, env_id=task.env_id, threshold=task.threshold, budgets=budgets,
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
            m["threshold_steps_iqm"] = 0.0 if value.point >= task.threshold else None
            share = float(np.mean([r["returns"][0] >= task.threshold for r in rs]))
            m["share_above"] = (np.array([0.0, float(steps)]), [share, share])
        else:
            grid, curve = curve_intervals([(r["steps"], r["returns"]) for r in rs])
            m["curve"] = (grid, curve)
            m["threshold_steps_iqm"] = steps_to_threshold(grid, [c.point for c in curve], task.threshold)
            m["share_above"] = (grid, [float(np.mean([v >= task.threshold for v in (_value_at(r, int(g)) for r in rs)
                                                       if v is not None])) for g in grid])  # fmt: skip
        per_seed = [
            (0.0 if r["returns"][0] >= task.threshold else None) if r.get("static")
            else steps_to_threshold(r["steps"], r["returns"], task.threshold)
            for r in rs if r.get("complete")
        ]  # fmt: skip
        worst = [w for w in (worst_after_reaching(r["steps"], r["returns"], task.threshold)
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
    expo = res["methods"].get("expo")
    for method, m in res["methods"].items():
        ref = expo["threshold_steps_iqm"] if expo else None
        m["ratio_to_expo"] = ratio_to_reference(m["threshold_steps_iqm"], ref) if expo else None
        if expo and method != "expo":
            m["expo_vs"] = {}
            for b in budgets:
                ref, other = expo["at"].get(b), m["at"].get(b)
                if ref is not None and other is not None:
                    enough = min(ref.n, other.n) >= MIN_SEEDS_FOR_VERDICT
                    m["expo_vs"][b] = compare(ref, other) if enough else "too_few"
    sac, no_data = res["methods"].get("sac"), res["methods"].get("expo_no_data")
    if sac and no_data and sac["at"].get(steps) and no_data["at"].get(steps):
        a, b = no_data["at"][steps], sac["at"][steps]
        res["no_data_vs_sac"] = compare(a, b) if min(a.n, b.n) >= MIN_SEEDS_FOR_VERDICT else "too_few"
    return res


def markdown(analyses: list[dict], cfg: RunConfig, datasets: dict[str, dict]) -> str:
    lines = []
    for res in analyses:
        task = TASKS[res["task"]]
        ds = datasets.get(res["task"], {})
        lines += [
            f"### {res['task']}: {task.env_id} ({task.reward_kind} reward), {res['mode']} evaluation",
            "",
            f"Dataset `{task.dataset_id}`: {ds.get('episodes', '?')} episodes, {ds.get('transitions', '?')} transitions, "
            f"mean return {ds.get('mean_return', float('nan')):.1f}. Budget {res['steps']} env steps, evaluation every "
            f"{cfg.task_eval_every(task)} steps ({cfg.eval_episodes} {res['mode']} episodes), "
            f"threshold {task.threshold:g}.",
            "",
            "IQM of the evaluation return over seeds [bootstrap 95% interval] (n = seeds with that evaluation):",
            "",
            "| method | " + " | ".join(f"{b} steps" for b in res["budgets"])
            + f" | steps to {task.threshold:g} (IQM curve) | ratio to EXPO | seeds reaching it | worst eval after "
            "reaching it (IQM over those seeds) | EXPO vs it at " + " / ".join(str(b) for b in res["budgets"]) + " |",
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
            lines.append(
                f"| {LABELS[method]} | " + " | ".join(cells)
                + f" | {_fmt_steps(m['threshold_steps_iqm'])} | {_fmt_ratio(m['ratio_to_expo'])} | {reach} | "
                f"{worst_cell} | {verdict} |"
            )
        if "no_data_vs_sac" in res:
            lines += ["", f"Without data, EXPO vs SAC at {res['steps']} steps: "
                      + VERDICTS[res["no_data_vs_sac"]].replace("EXPO", "EXPO (no data)") + "."]
        lines += ["", "EXPO vs it: `higher` / `lower` = EXPO's interval lies above / below the method's (disjoint 95% "
                  f"intervals), `tie` = they overlap, `n<{MIN_SEEDS_FOR_VERDICT}` = too few seeds for a call. "
                  "Seeds reaching it: seeds whose own evaluation curve reaches the threshold at least once "
                  "(complete runs only). Worst eval after reaching it: per seed, the lowest evaluation at or after "
                  "the first that reaches the threshold (stability: how far a run falls back)."]
        lines += ["", f"![{res['task']} {res['mode']}](sample_efficiency_{res['task']}_{res['mode']}.png)", ""]
    return "\n".join(lines)


def plot(res: dict, out: pathlib.Path, learning_starts: Optional[int] = None) -> None:
    """Left: IQM eval return over seeds with its 95% bootstrap band. Right: share of seeds at or above the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = TASKS[res["task"]]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw=dict(width_ratios=[3, 2]))
    colors = dict(expo="C0", sac="C1", rlpd="C2", base_only="C7", expo_best_of_n="C4", expo_random_select="C5",
                  expo_no_data="C3")  # fmt: skip
    for method in [m for m in ALL_METHODS if m in res["methods"] and m in task.methods]:  # variants: table only
        m = res["methods"][method]
        grid, curve = m["curve"]
        pts = np.array([c.point for c in curve])
        lo, hi = np.array([c.low for c in curve]), np.array([c.high for c in curve])
        n = max(c.n for c in curve)
        style = "--" if method == "base_only" else "-"
        marker = None if method == "base_only" else "."
        ax.plot(grid, pts, style, color=colors[method], label=f"{LABELS[method]} (n={n})", marker=marker)
        ax.fill_between(grid, lo, hi, color=colors[method], alpha=0.12)
        sgrid, share = m["share_above"]
        ax2.plot(sgrid, share, style, color=colors[method], marker=marker)
    for a in (ax, ax2):
        if learning_starts:
            a.axvline(learning_starts, color="0.5", lw=0.8, ls="-.")
        a.set_xlabel("env steps")
        a.grid(alpha=0.3)
    ax.axhline(task.threshold, color="k", lw=0.8, ls=":", label=f"threshold {task.threshold:g}")
    if learning_starts:
        ax.plot([], [], color="0.5", lw=0.8, ls="-.", label=f"random warm-up ends ({learning_starts})")
    ax.set_ylabel("eval return: IQM over seeds, 95% bootstrap band")
    ax.set_title(f"{task.env_id} ({task.reward_kind} reward), {res['mode']} evaluation")
    ax2.set_ylabel(f"share of seeds with eval return >= {task.threshold:g}")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_title("seeds at or above the threshold")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _jsonable(res: dict) -> dict:
    def conv(x: Any) -> Any:
        if isinstance(x, Interval):
            return dataclasses.asdict(x)
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


def report(task_names: list[str], cfg: RunConfig, cache_dir: pathlib.Path, results_dir: pathlib.Path) -> str:
    """Tables (markdown + JSON) and one plot per task, from the cached runs that match ``cfg``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    data = collect(cache_dir, cfg, task_names)
    analyses, datasets = [], {}
    for name in task_names:
        if not data[name]:
            print(f"report: no cached runs for {name} with these settings", flush=True)
            continue
        try:
            datasets[name] = dataset_summary(TASKS[name], cache_dir)
        except Exception as e:  # the table does not need it
            print(f"report: could not read the {name} dataset ({e})", flush=True)
        for mode in MODES:
            res = analyse(name, data[name], cfg, mode)
            if not res["methods"]:
                continue
            plot(res, results_dir / f"sample_efficiency_{name}_{mode}.png", cfg.learning_starts)
            analyses.append(res)
    text = "\n".join([
        "# Sample efficiency (generated by `python -m bench.sample_efficiency`)",
        "",
        f"Settings: {json.dumps(dataclasses.asdict(cfg))}",
        "",
        markdown(analyses, cfg, datasets),
    ])  # fmt: skip
    (results_dir / "sample_efficiency.md").write_text(text)
    per_run = {name: {m: [dict(seed=r["seed"], complete=r.get("complete"), steps=r["steps"], returns=r["returns"],
                               stochastic_returns=r.get("stochastic_returns"),
                               seconds_per_step=r.get("seconds_per_step")) for r in rs]
                      for m, rs in data[name].items()} for name in data}  # fmt: skip
    (results_dir / "sample_efficiency.json").write_text(json.dumps(dict(
        settings=dataclasses.asdict(cfg), datasets=datasets,
        analyses=[_jsonable({k: v for k, v in a.items()}) | {"methods": {m: _jsonable({k: v for k, v in d.items() if k not in ("curve", "share_above")}) for m, d in a["methods"].items()}} for a in analyses],
        runs=per_run), indent=1))  # fmt: skip
    print(text, flush=True)
    return text


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=None, choices=list(ALL_METHODS),
                   help="default: each task's own methods (the stability variants only when named)")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0..4 (quick: 0)")
    p.add_argument("--steps", type=int, default=None, help="env-step budget for every task (default: the task's)")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-episodes", type=int, default=None)
    p.add_argument("--learning-starts", type=int, default=None)
    p.add_argument("--pretrain-steps", type=int, default=None)
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
    names = ("steps", "eval_every", "eval_episodes", "learning_starts", "pretrain_steps", "max_episode_steps", "preset")
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
                if m in TASKS[t].methods or m in STABILITY_VARIANTS]  # fmt: skip
        if args.runs:
            todo = []
            for spec in args.runs:
                t, m, s = spec.split("/")
                if t not in TASKS or (m not in TASKS[t].methods and m not in STABILITY_VARIANTS):
                    raise SystemExit(f"--runs: unknown task/method in {spec!r}")
                todo.append((t, m, int(s)))
        t0 = time.time()
        failures = run_jobs(run_one, todo, (cfg, str(cache_dir)), args.jobs)
        print(f"{len(todo)} runs done in {time.time() - t0:.0f} s", flush=True)
    report(args.tasks, cfg, cache_dir, results_dir)
    return exit_code(failures)


if __name__ == "__main__":
    sys.exit(main())
