"""Robomimic Lift (robosuite, sparse 0/1 success reward): success rate vs env steps, EXPO beside an RLPD-style SAC.

Data: 10 scripted demos written locally (``sb3_expo.datasets.robomimic_lift``, no download, no human data).

Methods (same env-step budget, same offline data, same 50/50 ``RobomimicReplayBuffer``, same seeds):

* ``expo``: EXPO, ``cpu`` preset (UTD 2, T=5, N=4, 10 LayerNorm critics 128x128), 50/50 offline/online
  minibatches, diffusion base pretrained on the demos first (offline-to-online); evaluated with the stochastic
  on-the-fly policy, as the paper does;
* ``rlpd``: SB3 SAC with the same buffer, ``n_critics=10``, the same UTD (``gradient_steps``), batch size,
  learning rate and critic width as EXPO's ``cpu`` preset (the RLPD recipe without LayerNorm critics and the
  random 2-critic subset, which SB3's SAC does not have); evaluated with the mean action (deterministic), as RLPD.

Also measured once: the scripted controller that wrote the demos (its own success rate at this horizon), and for
every EXPO seed the pretrained EMA base policy alone (one diffusion sample per step, no critic, no edit): the
imitation success before any online step.

Every (method, seed) run is cached in ``<cache>/runs/<method>/seed<k>.json`` after every evaluation, with a
checkpoint of the model and its replay buffer, so an interrupted run resumes::

    python -m bench.lift --quick                    # smoke test: 1 seed, 200 env steps per method (~3-5 min);
                                                    # writes bench/cache/lift/quick/results/lift_quick.*
    python -m bench.lift --seeds 0 1 --jobs 2       # the benchmark (resumable)
    python -m bench.lift --report-only              # bench/results/lift.{md,png,json} from what is cached

Needs the ``[robosuite]`` extra (robosuite 1.4.1, mujoco < 3.10) and matplotlib for the plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Any, Optional

import numpy as np

if __package__ in (None, ""):  # ``python bench/lift.py``: make ``bench`` / ``sb3_expo`` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    add_common_args, config_fields, exit_code, finish_run, load_json, resume, run_jobs, save_progress, write_json,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / "bench" / "cache" / "lift"
DEFAULT_RESULTS = REPO / "bench" / "results"
FORMAT_VERSION = 1
OBS_KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]
METHODS = ("expo", "rlpd")
LABELS = {
    "expo": "EXPO (cpu preset, pretrained base, 50/50 buffer)",
    "rlpd": "RLPD-style SAC (10 critics, 50/50 buffer)",
}


@dataclasses.dataclass(frozen=True)
class LiftConfig:
    """Settings shared by all runs of one invocation (all of it is part of each run's cache key)."""

    steps: int = 3000  # env steps per run (learning_starts included)
    eval_every: int = 500
    eval_episodes: int = 5
    horizon: int = 100  # TimeLimit (the scripted demos succeed in ~40 steps)
    learning_starts: int = 100  # random-action warm-up, the same for both methods
    pretrain_steps: int = 5000  # EXPO base-policy pretraining on the demos (EMA base: ~3000+ needed, see docs)
    n_demos: int = 10
    demo_seed: int = 0
    demo_noise: float = 0.05
    demo_eval_episodes: int = 20  # the scripted controller's own success rate
    preset: str = "cpu"
    hard_reset: bool = False  # robosuite reloads the model at every reset when True (~0.8 s here)
    threads: int = 1

    def key(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("threads")
        d.pop("demo_eval_episodes")
        return dict(version=FORMAT_VERSION, **d)


QUICK = dict(steps=200, eval_every=100, eval_episodes=2, horizon=60, learning_starts=50, pretrain_steps=200,
             demo_eval_episodes=3)  # fmt: skip


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate_success(
    model: Any,
    env: Any,
    n_episodes: int,
    *,
    deterministic: bool = False,
    seed: Optional[int] = None,
) -> dict[str, Any]:
    """
    Success rate of ``model`` over ``n_episodes`` episodes of a robomimic env (``info["success"]`` or
    ``info["is_success"]`` at the episode's last step).

    :param model: anything with SB3's ``predict(obs, deterministic=...) -> (action, state)``
    :param env: a Gymnasium env (not vectorised) with a time limit
    :param n_episodes: number of episodes
    :param deterministic: passed to ``predict`` (EXPO: the paper evaluates the stochastic OTF policy, ``False``)
    :param seed: episode ``i`` resets with ``seed + i`` (the same initial states for every model); ``None``: unseeded
    :return: ``success_rate``, ``successes`` (list of bool), ``returns``, ``lengths``
    """
    successes, returns, lengths = [], [], []
    for i in range(n_episodes):
        obs, info = env.reset(seed=None if seed is None else seed + i)
        done, total, length = False, 0.0, 0
        while not done:
            action, _ = model.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            length += 1
            done = terminated or truncated
        success = bool(info.get("success", info.get("is_success", False)))
        successes.append(success)
        returns.append(total)
        lengths.append(length)
    return dict(
        success_rate=float(np.mean(successes)) if successes else float("nan"),
        successes=successes,
        returns=returns,
        lengths=lengths,
    )


class BasePolicyActor:
    """
    EXPO's EMA diffusion base policy alone (one sample per step: no candidates, no critic, no edit), with SB3's
    ``predict`` signature: the imitation policy that pretraining produced.

    :param model: an :class:`~sb3_expo.EXPO` model
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, None]:
        import torch as th

        policy = self.model.policy
        policy.set_training_mode(False)
        with th.no_grad():
            x, vectorized = policy.obs_to_tensor(obs)
            base = policy.base_policy_ema
            action = base.sample(base.features_extractor(policy.preprocess(x))).clamp(-1.0, 1.0).cpu().numpy()
        action = policy.unscale_action(action)
        return (action if vectorized else action[0]), None


def evaluate_scripted(env: Any, cfg: LiftConfig, n_episodes: int, seed: int) -> dict[str, Any]:
    """Success rate of the scripted demo controller (noise ``cfg.demo_noise``) at this benchmark's horizon."""
    from sb3_expo.datasets.robomimic_lift import ScriptedLiftController

    controller = ScriptedLiftController(noise=cfg.demo_noise, rng=np.random.default_rng(seed))

    class _Actor:
        def predict(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, None]:
            return controller(env.unwrapped.last_obs_dict).astype(np.float32), None

    class _ResetController:
        """Env proxy that resets the controller at every env reset."""

        def reset(self, **kwargs: Any) -> Any:
            controller.reset()
            return env.reset(**kwargs)

        def step(self, action: np.ndarray) -> Any:
            return env.step(action)

    return evaluate_success(_Actor(), _ResetController(), n_episodes, seed=seed)


# ---------------------------------------------------------------------------------------------------- setup
def dataset_path(cache_dir: pathlib.Path, cfg: LiftConfig) -> pathlib.Path:
    return cache_dir / f"lift_scripted_{cfg.n_demos}demos_seed{cfg.demo_seed}_noise{cfg.demo_noise:g}.hdf5"


def ensure_dataset(cache_dir: pathlib.Path, cfg: LiftConfig) -> dict[str, Any]:
    """Write the scripted demos once (``write_scripted_lift_dataset``); return the writer's stats."""
    path = dataset_path(cache_dir, cfg)
    stats_path = path.with_suffix(".stats.json")
    if path.exists() and stats_path.exists():
        return json.loads(stats_path.read_text())
    from sb3_expo.datasets.robomimic_lift import write_scripted_lift_dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    stats = write_scripted_lift_dataset(path, n_demos=cfg.n_demos, seed=cfg.demo_seed, noise=cfg.demo_noise)
    write_json(stats_path, stats)
    print(f"dataset {path.name}: {stats['n_demos']} demos, {stats['total']} transitions, mean length "
          f"{stats['mean_length']:.1f}, scripted success {stats['success_rate']:.2f} over {stats['n_attempts']} "
          f"attempts", flush=True)  # fmt: skip
    return stats


def make_env(cache_dir: pathlib.Path, cfg: LiftConfig) -> Any:
    from sb3_expo.envs import make_robomimic_env

    return make_robomimic_env(
        str(dataset_path(cache_dir, cfg)),
        obs_keys=OBS_KEYS,
        max_episode_steps=cfg.horizon,
        env_kwargs={"hard_reset": cfg.hard_reset},
    )


def build_model(method: str, env: Any, cfg: LiftConfig, data_path: str, seed: int) -> Any:
    """The model of one method (see the module docstring)."""
    from stable_baselines3 import SAC

    from sb3_expo import EXPO
    from sb3_expo.presets import get_preset
    from sb3_expo.wrappers import RobomimicReplayBuffer

    offline = dict(
        replay_buffer_class=RobomimicReplayBuffer,
        replay_buffer_kwargs=dict(path=data_path, obs_keys=OBS_KEYS, offline_fraction=0.5),
    )
    common = dict(learning_starts=cfg.learning_starts, buffer_size=max(cfg.steps, 1000), seed=seed, device="cpu",
                  verbose=0)  # fmt: skip
    preset = get_preset(cfg.preset)
    if method == "expo":
        return EXPO("MlpPolicy", env, **get_preset(cfg.preset, **common), **offline)
    if method == "rlpd":
        return SAC(
            "MlpPolicy",
            env,
            batch_size=preset["batch_size"],
            gradient_steps=preset["gradient_steps"],
            learning_rate=preset.get("learning_rate", 3e-4),
            policy_kwargs=dict(
                n_critics=10, net_arch=dict(pi=[256, 256], qf=list(preset["policy_kwargs"]["critic_net_arch"]))
            ),
            **offline,
            **common,
        )
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")


class _TrainSuccessCounter:
    """SB3 callback (built lazily to keep imports light): counts training episodes and their successes."""

    @staticmethod
    def make(record: dict[str, Any]) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class Counter(BaseCallback):
            def _on_step(self) -> bool:
                for info, done in zip(self.locals["infos"], self.locals["dones"]):
                    if done:
                        record["train_episodes"] += 1
                        record["train_successes"] += int(bool(info.get("is_success", False)))
                return True

        return Counter()


# ---------------------------------------------------------------------------------------------------- one run
def run_path(cache_dir: pathlib.Path, method: str, seed: int) -> pathlib.Path:
    return cache_dir / "runs" / method / f"seed{seed}.json"


def run_one(method: str, seed: int, cfg: LiftConfig, cache_dir: str) -> dict[str, Any]:
    """Train and evaluate one (method, seed); resume from its checkpoint, or return the cached result."""
    import torch as th
    from stable_baselines3 import SAC

    from sb3_expo import EXPO

    th.set_num_threads(cfg.threads)
    cache = pathlib.Path(cache_dir)
    key = cfg.key()
    path = run_path(cache, method, seed)
    tag = f"[lift/{method}/seed{seed}]"
    old = load_json(path)
    if old is not None and old.get("key") == key and old.get("complete"):
        print(f"{tag} cached", flush=True)
        return old

    data_path = str(dataset_path(cache, cfg))
    env, eval_env = make_env(cache, cfg), make_env(cache, cfg)
    eval_seed = 10_000 + 100 * seed  # the same initial states at every evaluation of this seed, for both methods
    deterministic = method != "expo"  # EXPO: stochastic OTF policy (the paper); SAC: mean action (RLPD)
    cls = SAC if method == "rlpd" else EXPO
    start = time.time()
    model = resume(cls, old, key, path, env, seed, tag)
    if model is not None:
        record = old
    else:
        model = build_model(method, env, cfg, data_path, seed)
        record = dict(method=method, seed=seed, key=key, steps=[], success_rate=[], successes=[], eval_lengths=[],
                      train_episodes=0, train_successes=0, train_success_at=[], train_seconds=0.0,
                      eval_seconds=0.0, deterministic_eval=deterministic, complete=False,
                      torch_threads=th.get_num_threads())  # fmt: skip
        if method == "expo":
            t0 = time.time()
            model.pretrain(cfg.pretrain_steps, progress_bar=False, log_interval=10**9)
            record["pretrain_seconds"] = time.time() - t0
            t0 = time.time()
            base = evaluate_success(BasePolicyActor(model), eval_env, cfg.eval_episodes, seed=eval_seed)
            record["base_only"] = dict(success_rate=base["success_rate"], successes=base["successes"],
                                       lengths=base["lengths"])  # fmt: skip
            record["eval_seconds"] += time.time() - t0
            print(f"{tag} pretrained base alone: success {base['success_rate']:.2f} "
                  f"({record['pretrain_seconds']:.0f} s pretraining)", flush=True)  # fmt: skip
        _evaluate_into(record, model, eval_env, cfg, eval_seed, deterministic)
        write_json(path, record)
        print(f"{tag} step 0: success {record['success_rate'][-1]:.2f}", flush=True)

    counter = _TrainSuccessCounter.make(record)
    while model.num_timesteps < cfg.steps:
        chunk = min(cfg.eval_every - model.num_timesteps % cfg.eval_every, cfg.steps - model.num_timesteps)
        t0 = time.time()
        model.learn(chunk, callback=counter, reset_num_timesteps=model.num_timesteps == 0, progress_bar=False)
        record["train_seconds"] += time.time() - t0
        _evaluate_into(record, model, eval_env, cfg, eval_seed, deterministic)
        save_progress(model, record, path, cfg.steps)
        print(f"{tag} step {model.num_timesteps}: eval success {record['success_rate'][-1]:.2f}, training episodes "
              f"{record['train_successes']}/{record['train_episodes']} successful ({time.time() - start:.0f} s wall)",
              flush=True)  # fmt: skip
    finish_run(record, path, cfg.steps)
    env.close()
    eval_env.close()
    return record


def _evaluate_into(record: dict, model: Any, env: Any, cfg: LiftConfig, seed: int, deterministic: bool) -> None:
    t0 = time.time()
    res = evaluate_success(model, env, cfg.eval_episodes, deterministic=deterministic, seed=seed)
    record["eval_seconds"] += time.time() - t0
    record["steps"].append(int(model.num_timesteps))
    record["success_rate"].append(res["success_rate"])
    record["successes"].append(res["successes"])
    record["eval_lengths"].append(res["lengths"])
    record["train_success_at"].append([record["train_successes"], record["train_episodes"]])


def demo_policy_success(cache_dir: pathlib.Path, cfg: LiftConfig) -> dict[str, Any]:
    """The scripted controller's success rate at the benchmark horizon (cached)."""
    path = cache_dir / "demo_policy.json"
    key = dict(cfg.key(), demo_eval_episodes=cfg.demo_eval_episodes)
    old = load_json(path)
    if old is not None and old.get("key") == key:
        return old
    env = make_env(cache_dir, cfg)
    try:
        res = evaluate_scripted(env, cfg, cfg.demo_eval_episodes, seed=20_000)
    finally:
        env.close()
    out = dict(key=key, success_rate=res["success_rate"], n_episodes=len(res["successes"]),
               mean_length=float(np.mean(res["lengths"])))  # fmt: skip
    write_json(path, out)
    print(f"scripted demo controller: success {out['success_rate']:.2f} over {out['n_episodes']} episodes "
          f"(horizon {cfg.horizon})", flush=True)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------- report
def collect(cache_dir: pathlib.Path, cfg: LiftConfig) -> dict[str, list[dict]]:
    """Cached runs whose key matches ``cfg`` (complete or not), by method."""
    out: dict[str, list[dict]] = {}
    for method in METHODS:
        runs = []
        for p in sorted((cache_dir / "runs" / method).glob("seed*.json")):
            r = load_json(p)
            if r is not None and r.get("key") == cfg.key() and r.get("steps"):
                runs.append(r)
        if runs:
            out[method] = runs
    return out


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.2f} ± {v.std():.2f} (n={len(v)})"


def summarise(runs: dict[str, list[dict]], cfg: LiftConfig) -> dict[str, Any]:
    budgets = list(range(0, cfg.steps + 1, cfg.eval_every))
    if budgets[-1] != cfg.steps:
        budgets.append(cfg.steps)
    out: dict[str, Any] = dict(budgets=budgets, methods={})
    for method, rs in runs.items():
        at = {}
        for b in budgets:
            vals = [r["success_rate"][r["steps"].index(b)] for r in rs if b in r["steps"]]
            at[b] = dict(mean=float(np.mean(vals)) if vals else None, std=float(np.std(vals)) if vals else None,
                         n=len(vals), values=vals)  # fmt: skip
        m: dict[str, Any] = dict(
            seeds=sorted(r["seed"] for r in rs),
            complete=sum(bool(r.get("complete")) for r in rs),
            at=at,
            train_success=[[r["train_successes"], r["train_episodes"]] for r in rs],
            # training-loop wall time (env steps, updates; no evaluation, no pretraining) per env step so far
            seconds_per_step=[r["train_seconds"] / r["steps"][-1] for r in rs if r["steps"][-1] > 0],
            eval_seconds=[r.get("eval_seconds") for r in rs],
        )
        # training episodes (the behaviour policy, exploration included) that ended in each evaluation window,
        # pooled over seeds: (successes, episodes) per window ending at budgets[1:]
        windows = []
        for lo, hi in zip(budgets[:-1], budgets[1:]):
            succ = eps = 0
            for r in rs:
                if lo in r["steps"] and hi in r["steps"]:
                    at = r["train_success_at"]
                    (s0, e0), (s1, e1) = at[r["steps"].index(lo)], at[r["steps"].index(hi)]
                    succ, eps = succ + s1 - s0, eps + e1 - e0
            windows.append([succ, eps])
        m["train_windows"] = windows
        if method == "expo":
            m["base_only"] = [r["base_only"]["success_rate"] for r in rs if "base_only" in r]
            m["pretrain_seconds"] = [r.get("pretrain_seconds") for r in rs]
        out["methods"][method] = m
    return out


def markdown(summary: dict, cfg: LiftConfig, data_stats: dict, demo: Optional[dict], wall: Optional[float]) -> str:
    budgets = summary["budgets"]
    lines = [
        "# Robomimic Lift: success rate vs env steps (generated by `python -m bench.lift`)",
        "",
        f"Data: {data_stats.get('n_demos', '?')} scripted demos ({data_stats.get('total', '?')} transitions, mean "
        f"length {data_stats.get('mean_length', float('nan')):.1f} steps, action noise {cfg.demo_noise:g}), written "
        "locally by `sb3_expo.datasets.robomimic_lift`. Env: robosuite 1.4.1 Lift, Panda, OSC_POSE, sparse 0/1 "
        f"reward, episode ends at success, horizon {cfg.horizon} steps (robomimic: 400), "
        f"`hard_reset={cfg.hard_reset}`.",
        "",
        f"Budget: {cfg.steps} env steps per run (the first {cfg.learning_starts} with uniformly random actions), "
        f"evaluation every {cfg.eval_every} steps on {cfg.eval_episodes} episodes (the same initial states at every "
        f"evaluation of a seed). EXPO: `{cfg.preset}` preset, base pretrained {cfg.pretrain_steps} steps on the "
        "demos, stochastic OTF evaluation (as the paper). RLPD-style SAC: SB3 SAC, `n_critics=10` with EXPO's "
        "critic width, EXPO's UTD / batch size / learning rate, no LayerNorm, min over all 10 critics (SB3), "
        "deterministic evaluation. "
        f"torch threads per process: {cfg.threads}.",
        "",
        "Success rate at each budget, mean ± std over seeds (population std; n = seeds that reached that budget):",
        "",
        "| method | " + " | ".join(f"{b} steps" for b in budgets)
        + " | training episodes successful | training wall s / env step |",
        "|---|" + "---|" * len(budgets) + "---|---|",
    ]
    for method in [m for m in METHODS if m in summary["methods"]]:
        m = summary["methods"][method]
        cells = [_mean_std(m["at"][b]["values"]) for b in budgets]
        train = ", ".join(f"{s}/{n}" for s, n in m["train_success"])
        sps = f"{np.mean(m['seconds_per_step']):.3f}" if m["seconds_per_step"] else "-"
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + f" | {train} | {sps} |")
    lines += [
        "",
        f"Training episodes that ended in each {cfg.eval_every}-step window, successful / all, pooled over seeds "
        "(the behaviour policy: EXPO's stochastic OTF policy, SAC's sampled actions; random actions before "
        f"step {cfg.learning_starts}):",
        "",
        "| method | " + " | ".join(f"{lo}-{hi}" for lo, hi in zip(budgets[:-1], budgets[1:])) + " |",
        "|---|" + "---|" * (len(budgets) - 1),
    ]
    for method in [m for m in METHODS if m in summary["methods"]]:
        w = summary["methods"][method]["train_windows"]
        lines.append(f"| {LABELS[method]} | " + " | ".join(f"{s}/{n}" if n else "-" for s, n in w) + " |")
    lines.append("")
    if "expo" in summary["methods"] and summary["methods"]["expo"].get("base_only"):
        b = summary["methods"]["expo"]["base_only"]
        lines.append(f"- Pretrained EXPO base policy alone (EMA base, 1 sample per step, before any online step), "
                     f"{cfg.eval_episodes} episodes per seed: {_mean_std(b)}.")  # fmt: skip
    if demo is not None:
        lines.append(f"- Scripted demo controller (noise {cfg.demo_noise:g}) at horizon {cfg.horizon}: "
                     f"{demo['success_rate']:.2f} over {demo['n_episodes']} episodes (mean length "
                     f"{demo['mean_length']:.1f}); it wrote {data_stats.get('n_demos', '?')} successes in "
                     f"{data_stats.get('n_attempts', '?')} attempts.")  # fmt: skip
    if wall is not None:
        lines.append(f"- Wall time of the invocation that ran these runs: {wall / 60:.1f} min.")
    lines += ["", "![Lift success rate](lift.png)", ""]
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], summary: dict, demo: Optional[dict], cfg: LiftConfig, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(expo="C0", rlpd="C2")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, rs in runs.items():
        for r in rs:
            ax.plot(r["steps"], r["success_rate"], color=colors[method], alpha=0.25, lw=0.8)
        at = summary["methods"][method]["at"]
        xs = [b for b in summary["budgets"] if at[b]["n"]]
        mean = np.array([at[b]["mean"] for b in xs])
        std = np.array([at[b]["std"] for b in xs])
        ax.plot(xs, mean, "-o", color=colors[method], ms=4, label=f"{LABELS[method]} (n={len(rs)})")
        ax.fill_between(xs, mean - std, mean + std, color=colors[method], alpha=0.15)
        w = summary["methods"][method]["train_windows"]
        wx = [hi for (s, n), hi in zip(w, summary["budgets"][1:]) if n]
        wy = [s / n for s, n in w if n]
        if wx:
            ax.plot(wx, wy, ":", marker="x", color=colors[method], ms=4, lw=1,
                    label=f"{method}: training episodes in the last {cfg.eval_every} steps")  # fmt: skip
    base = summary["methods"].get("expo", {}).get("base_only")
    if base:
        ax.axhline(float(np.mean(base)), color="C0", ls="--", lw=0.9, label="pretrained EXPO base alone")
    if demo is not None:
        ax.axhline(demo["success_rate"], color="k", ls=":", lw=0.9, label="scripted demo controller")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"success rate ({cfg.eval_episodes} episodes; mean ± std over seeds)")
    ax.set_title(f"Robomimic Lift, {cfg.n_demos} scripted demos, horizon {cfg.horizon}")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def report(cfg: LiftConfig, cache_dir: pathlib.Path, results_dir: pathlib.Path, stem: str,
           wall: Optional[float] = None) -> str:  # fmt: skip
    """``<stem>.md``, ``<stem>.png`` and ``<stem>.json`` in ``results_dir`` from the cached runs that match ``cfg``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    runs = collect(cache_dir, cfg)
    stats_path = dataset_path(cache_dir, cfg).with_suffix(".stats.json")
    data_stats = load_json(stats_path) or {}
    demo = load_json(cache_dir / "demo_policy.json")
    if demo is not None and demo.get("key", {}).get("horizon") != cfg.horizon:
        demo = None
    summary = summarise(runs, cfg)
    text = markdown(summary, cfg, data_stats, demo, wall)
    if runs:
        plot(runs, summary, demo, cfg, results_dir / f"{stem}.png")
        text = text.replace("(lift.png)", f"({stem}.png)")
    (results_dir / f"{stem}.md").write_text(text)
    per_run = {m: [{k: r.get(k) for k in ("seed", "complete", "steps", "success_rate", "successes", "eval_lengths",
                                          "train_episodes", "train_successes", "train_success_at", "base_only",
                                          "pretrain_seconds", "train_seconds", "eval_seconds", "seconds_per_step",
                                          "deterministic_eval", "resumed_at")} for r in rs]
               for m, rs in runs.items()}  # fmt: skip
    (results_dir / f"{stem}.json").write_text(json.dumps(
        dict(settings=dataclasses.asdict(cfg), dataset=data_stats, demo_policy=demo, summary=summary, runs=per_run,
             wall_seconds=wall), indent=1))  # fmt: skip
    print(text, flush=True)
    return text


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 (quick: 0)")
    for name, typ in (("steps", int), ("eval-every", int), ("eval-episodes", int), ("horizon", int),
                      ("learning-starts", int), ("pretrain-steps", int), ("n-demos", int), ("demo-eval-episodes", int)):
        p.add_argument(f"--{name}", type=typ, default=None)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 200 env steps per method")
    add_common_args(p)
    p.add_argument("--cache-dir", type=pathlib.Path, default=None, help="default: bench/cache/lift (quick: .../quick)")
    p.add_argument("--results-dir", type=pathlib.Path, default=None,
                   help="default: bench/results (quick: <cache-dir>/results)")  # fmt: skip
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> LiftConfig:
    names = ("steps", "eval_every", "eval_episodes", "horizon", "learning_starts", "pretrain_steps", "n_demos",
             "demo_eval_episodes", "preset")  # fmt: skip
    return LiftConfig(**config_fields(args, names, QUICK if args.quick else {}))


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    import torch as th

    th.set_num_threads(args.threads)
    cfg = config_from_args(args)
    cache_dir = (args.cache_dir or (DEFAULT_CACHE / "quick" if args.quick else DEFAULT_CACHE)).resolve()
    stem = "lift_quick" if args.quick else "lift"
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1])
    print(f"torch threads per process: {th.get_num_threads()} | jobs: {args.jobs} | seeds: {seeds} | "
          f"settings: {dataclasses.asdict(cfg)}", flush=True)  # fmt: skip
    failures: list[str] = []
    wall = None
    if not args.report_only:
        t0 = time.time()
        ensure_dataset(cache_dir, cfg)
        demo_policy_success(cache_dir, cfg)
        # Seed-major order: partial results stay balanced across methods.
        todo = [(m, s) for s in seeds for m in args.methods]
        failures = run_jobs(run_one, todo, (cfg, str(cache_dir)), args.jobs)
        wall = time.time() - t0
        print(f"{len(todo)} runs done in {wall:.0f} s", flush=True)
        write_json(cache_dir / "last_invocation.json", dict(key=cfg.key(), wall_seconds=wall, seeds=seeds,
                                                             methods=args.methods, jobs=args.jobs))  # fmt: skip
    else:
        last = load_json(cache_dir / "last_invocation.json")
        if last is not None and last.get("key") == cfg.key():
            wall = last["wall_seconds"]
    results_dir = args.results_dir or (cache_dir / "results" if args.quick else DEFAULT_RESULTS)
    report(cfg, cache_dir, results_dir, stem, wall)
    return exit_code(failures)


if __name__ == "__main__":
    sys.exit(main())
