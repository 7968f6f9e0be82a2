"""The main job: EXPO offline-to-online on Pendulum-v1 from a local demo dataset, against a SAC baseline.

``python -m sb3_expo.main_job`` (no download; measured 14.5 min wall / 7.2 min CPU on 2 shared CPU cores with a
load average of 6-7; ``--quick``: about a minute):

1. writes the demo dataset ``sb3-expo/pendulum-medium-v0`` (a noisy scripted swing-up controller, 20 episodes,
   mean return about -650; random actions score about -1200, a good policy about -150) under
   ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``), or reuses it;
2. builds EXPO with the ``cpu`` preset and a 50/50 offline/online replay buffer (``MinariReplayBuffer``),
   pretrains its diffusion base policy on the dataset (``model.pretrain``), then fine-tunes online;
3. evaluates it along the way (the learning curve) and at the end (mean return over ``--eval-episodes``), and saves
   ``expo_pendulum.zip`` (``EXPO.load`` opens it);
4. trains the baseline for the same env steps: SB3's SAC with its default hyperparameters (2 critics, one gradient
   step per env step) and the SAME 50/50 offline buffer; it has no pretraining (SAC has no imitation phase);
5. writes ``learning_curve.png`` (return vs env steps, EXPO beside SAC, the dataset's mean return as a line) and
   ``summary.json``, and prints the summary.

Every flag has a default; ``--help`` lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any, Optional

import numpy as np

ENV_ID = "Pendulum-v1"
DATASET_ID = "sb3-expo/pendulum-medium-v0"
QUICK_DATASET_ID = "sb3-expo/pendulum-medium-quick-v0"  # --quick's smaller dataset never replaces the full one


class CurveCallback:
    """Evaluate the model every ``eval_freq`` env steps (and once when training starts): the learning curve.

    Built lazily as an SB3 ``BaseCallback`` subclass so that this module imports fast.
    """

    @staticmethod
    def make(eval_env: Any, eval_freq: int, n_episodes: int, curve: list, label: str, last_step: int) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.evaluation import evaluate_policy

        class _Curve(BaseCallback):
            def _evaluate(self) -> None:
                rets, _ = evaluate_policy(self.model, eval_env, n_eval_episodes=n_episodes, deterministic=True, return_episode_rewards=True)
                curve.append((int(self.num_timesteps), float(np.mean(rets)), float(np.std(rets))))
                if self.verbose:
                    print(f"[{label}] {self.num_timesteps:>6d} env steps: eval return {np.mean(rets):8.1f} +- {np.std(rets):.1f}")

            def _on_training_start(self) -> None:
                self._evaluate()

            def _on_step(self) -> bool:
                # the last step is covered by the (longer) final evaluation
                if eval_freq > 0 and self.num_timesteps % eval_freq == 0 and self.num_timesteps < last_step:
                    self._evaluate()
                return True

        return _Curve(verbose=1)


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_expo.main_job", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=None, help="online env steps of EXPO and of the baseline (default 3000; --quick 200)")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="base-policy pretraining steps (default 2000; --quick 50)")
    parser.add_argument("--dataset-episodes", type=int, default=None, help="episodes in the demo dataset (default 20; --quick 5)")
    parser.add_argument("--eval-freq", type=int, default=None, help="env steps between learning-curve evaluations (default 500)")
    parser.add_argument("--curve-episodes", type=int, default=None, help="episodes per learning-curve evaluation (default 3)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes of the final evaluation (default 10)")
    parser.add_argument("--learning-starts", type=int, default=None, help="uniformly random env steps before updates (default 0: the pretrained policy acts at once)")
    parser.add_argument("--baseline", choices=["sac", "none"], default="sac", help="baseline trained on the same env steps and buffer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="logs/main_job", help="output folder (zip, png, json)")
    parser.add_argument("--minari-path", default=None, help="Minari root for the dataset (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny numbers everywhere and the tiny preset (about a minute)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    quick = dict(steps=200, pretrain_steps=50, dataset_episodes=5, eval_freq=100, curve_episodes=1, eval_episodes=2, learning_starts=50)
    full = dict(steps=3000, pretrain_steps=2000, dataset_episodes=20, eval_freq=500, curve_episodes=3, eval_episodes=10, learning_starts=0)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _plot(path: str, curves: dict[str, list], dataset_return: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for (label, curve), color in zip(curves.items(), ["tab:blue", "tab:orange", "tab:green"]):
        if not curve:
            continue
        x, mean, std = (np.array(v) for v in zip(*curve))
        ax.plot(x, mean, marker="o", ms=3, label=label, color=color)
        ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=color)
        ax.errorbar(x[-1:], mean[-1:], yerr=std[-1:], marker="*", ms=10, color=color, capsize=3)  # final evaluation
    ax.axhline(dataset_return, ls="--", color="gray", label=f"dataset mean ({dataset_return:.0f})")
    ax.set_xlabel("env steps (online)")
    ax.set_ylabel("eval return (star: final evaluation)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run the main job.

    :param argv: command-line arguments (default: ``sys.argv[1:]``)
    :return: the summary (also written to ``<out>/summary.json``)
    """
    args = _parse(argv)
    t_start = time.perf_counter()
    if args.minari_path:
        os.environ["MINARI_DATASETS_PATH"] = os.path.abspath(args.minari_path)
    import gymnasium as gym
    import torch as th
    from stable_baselines3 import SAC
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    from sb3_expo import EXPO, get_preset
    from sb3_expo.datasets.make_minari import episode_returns, make_minari_dataset
    from sb3_expo.wrappers import MinariReplayBuffer
    from sb3_expo.wrappers.offline_dataset import minari_datasets_root

    th.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    progress = not args.no_progress
    timings: dict[str, float] = {}

    # 1. the demo dataset (reused if it exists)
    dataset_id = QUICK_DATASET_ID if args.quick else DATASET_ID
    t = time.perf_counter()
    dataset = make_minari_dataset(ENV_ID, dataset_id, n_episodes=args.dataset_episodes, seed=args.seed, quality="medium")
    dataset_returns = episode_returns(dataset)
    timings["dataset_s"] = time.perf_counter() - t
    print(
        f"Dataset {dataset_id} in {minari_datasets_root()}: {dataset.total_episodes} episodes, {dataset.total_steps} "
        f"transitions, mean return {dataset_returns.mean():.1f}"
    )
    buffer = dict(replay_buffer_class=MinariReplayBuffer, replay_buffer_kwargs=dict(dataset_id=dataset_id, offline_fraction=0.5))

    def eval_env() -> Any:
        env = Monitor(gym.make(ENV_ID))
        env.reset(seed=args.seed + 10_000)
        return env

    # 2. EXPO: pretrain the base policy, then fine-tune online with the 50/50 buffer
    preset = get_preset("tiny" if args.quick else "cpu", learning_starts=args.learning_starts)
    model = EXPO("MlpPolicy", ENV_ID, seed=args.seed, verbose=0, **buffer, **preset)
    t = time.perf_counter()
    model.pretrain(args.pretrain_steps, progress_bar=progress)
    timings["expo_pretrain_s"] = time.perf_counter() - t
    expo_curve: list = []
    t = time.perf_counter()
    model.learn(args.steps, callback=CurveCallback.make(eval_env(), args.eval_freq, args.curve_episodes, expo_curve, "EXPO", args.steps), progress_bar=progress)
    timings["expo_online_s"] = time.perf_counter() - t
    t = time.perf_counter()
    expo_rets, _ = evaluate_policy(model, eval_env(), n_eval_episodes=args.eval_episodes, deterministic=True, return_episode_rewards=True)
    timings["expo_final_eval_s"] = time.perf_counter() - t
    expo_curve.append((int(model.num_timesteps), float(np.mean(expo_rets)), float(np.std(expo_rets))))
    model_path = os.path.join(args.out, "expo_pendulum.zip")
    model.save(model_path)
    print(f"EXPO: final return {np.mean(expo_rets):.1f} +- {np.std(expo_rets):.1f} over {args.eval_episodes} episodes; saved {model_path}")

    # 3. baseline: SAC (SB3 defaults) on the same env steps with the same 50/50 buffer
    baseline: dict[str, Any] = {"algo": "none"}
    sac_curve: list = []
    if args.baseline == "sac":
        sac = SAC("MlpPolicy", ENV_ID, seed=args.seed, verbose=0, learning_starts=args.learning_starts, **buffer)
        t = time.perf_counter()
        sac.learn(args.steps, callback=CurveCallback.make(eval_env(), args.eval_freq, args.curve_episodes, sac_curve, "SAC", args.steps), progress_bar=progress)
        timings["sac_online_s"] = time.perf_counter() - t
        sac_rets, _ = evaluate_policy(sac, eval_env(), n_eval_episodes=args.eval_episodes, deterministic=True, return_episode_rewards=True)
        sac_curve.append((int(sac.num_timesteps), float(np.mean(sac_rets)), float(np.std(sac_rets))))
        sac_path = os.path.join(args.out, "sac_pendulum.zip")
        sac.save(sac_path)
        baseline = dict(
            algo="SAC",
            description="SB3 SAC defaults (2 critics, 1 gradient step per env step, batch 256), same 50/50 offline buffer, no pretraining",
            final_mean_return=float(np.mean(sac_rets)),
            final_std_return=float(np.std(sac_rets)),
            curve=sac_curve,
            model_path=sac_path,
        )
        print(f"SAC:  final return {np.mean(sac_rets):.1f} +- {np.std(sac_rets):.1f} over {args.eval_episodes} episodes")

    # 4. plot and summary
    png = os.path.join(args.out, "learning_curve.png")
    curves = {"EXPO (cpu preset, pretrained base)": expo_curve}
    if sac_curve:
        curves["SAC (same buffer)"] = sac_curve
    _plot(png, curves, float(dataset_returns.mean()), f"{ENV_ID}, offline-to-online from {dataset_id}, seed {args.seed}")
    timings["total_s"] = time.perf_counter() - t_start
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    summary = dict(
        env=ENV_ID,
        seed=args.seed,
        quick=args.quick,
        dataset=dict(
            id=dataset_id,
            episodes=int(dataset.total_episodes),
            transitions=int(dataset.total_steps),
            mean_return=float(dataset_returns.mean()),
        ),
        settings=dict(
            online_steps=args.steps,
            pretrain_steps=args.pretrain_steps,
            preset="tiny" if args.quick else "cpu",
            learning_starts=args.learning_starts,
            offline_fraction=0.5,
            eval_episodes=args.eval_episodes,
            curve_episodes=args.curve_episodes,
            deterministic_eval=True,
            torch_threads=args.threads,
        ),
        expo=dict(
            final_mean_return=float(np.mean(expo_rets)),
            final_std_return=float(np.std(expo_rets)),
            curve=expo_curve,
            model_path=model_path,
        ),
        baseline=baseline,
        learning_curve_png=png,
        timings=timings,
        machine=dict(cpu_count=os.cpu_count(), load_average_at_end=load, python=platform.python_version(), torch=th.__version__),
    )
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("\n==== main job summary ====")
    print(f"dataset  {dataset_id}: mean return {dataset_returns.mean():.1f} ({dataset.total_episodes} episodes)")
    print(f"EXPO     {args.pretrain_steps} pretrain + {args.steps} online steps: return {np.mean(expo_rets):.1f} +- {np.std(expo_rets):.1f}")
    if baseline["algo"] != "none":
        print(f"SAC      {args.steps} online steps (same buffer): return {baseline['final_mean_return']:.1f} +- {baseline['final_std_return']:.1f}")
    print(f"wall time {timings['total_s']:.0f} s; files: {model_path}, {png}, {os.path.join(args.out, 'summary.json')}")
    return summary


def main(argv: Optional[list[str]] = None) -> None:
    """Command-line entry point."""
    run(argv)


if __name__ == "__main__":
    main()
