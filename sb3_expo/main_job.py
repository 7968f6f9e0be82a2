"""The main job: EXPO offline-to-online on Pendulum-v1 from a local demo dataset, against a SAC baseline.

``python -m sb3_expo.main_job`` (no download; about 4.5 min on 2 CPU cores; ``--quick``: about 20 s):

1. writes the demo dataset ``sb3-expo/pendulum-medium-v0`` (a noisy scripted swing-up controller, 20 episodes,
   mean return about -650; random actions score about -1200, a good policy about -150) under
   ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``), or reuses it;
2. builds EXPO with the ``cpu`` preset and a 50/50 offline/online replay buffer (``MinariReplayBuffer``),
   pretrains its diffusion base policy on the dataset (``model.pretrain``), then fine-tunes online after 300
   uniformly random env steps;
3. evaluates it along the way (the learning curve) and at the end (``--eval-episodes`` per mode), in both modes:
   deterministic (SB3's ``evaluate_policy`` default) and stochastic (the paper's evaluation), and saves
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


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_expo.main_job", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=None, help="online env steps of EXPO and of the baseline (default 3000; --quick 200)")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="base-policy pretraining steps (default 2000; --quick 50)")
    parser.add_argument("--dataset-episodes", type=int, default=None, help="episodes in the demo dataset (default 20; --quick 5)")
    parser.add_argument("--eval-freq", type=int, default=None, help="env steps between learning-curve evaluations (default 500)")
    parser.add_argument("--curve-episodes", type=int, default=None, help="episodes per mode per learning-curve evaluation (default 5)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per mode of the final evaluation (default 20)")
    parser.add_argument("--learning-starts", type=int, default=None, help="uniformly random env steps before updates, for EXPO and SAC (default 300: without them the critic sees only the pretrained policy's actions and returns fall back after a good phase, docs/evaluation.md)")
    parser.add_argument("--baseline", choices=["sac", "none"], default="sac", help="baseline trained on the same env steps and buffer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="logs/main_job", help="output folder (zip, png, json)")
    parser.add_argument("--minari-path", default=None, help="Minari root for the dataset (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny numbers everywhere and the tiny preset (about a minute)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    quick = dict(steps=200, pretrain_steps=50, dataset_episodes=5, eval_freq=100, curve_episodes=1, eval_episodes=2, learning_starts=50)
    full = dict(steps=3000, pretrain_steps=2000, dataset_episodes=20, eval_freq=500, curve_episodes=5, eval_episodes=20, learning_starts=300)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


MODE_STYLES = {"deterministic": "-", "stochastic": "--"}


def _plot(path: str, curves: dict[str, dict[str, list]], dataset_return: float, title: str) -> None:
    """Return vs env steps: one colour per algorithm, solid = deterministic, dashed = stochastic evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.2), dpi=120)
    for (label, by_mode), color in zip(curves.items(), ["tab:blue", "tab:orange", "tab:green"]):
        for mode, curve in by_mode.items():
            if not curve:
                continue
            x, mean, std = (np.array(v) for v in zip(*curve))
            ax.plot(x, mean, MODE_STYLES[mode], marker="o", ms=3, label=f"{label}, {mode}", color=color)
            ax.fill_between(x, mean - std, mean + std, alpha=0.08, color=color)
            ax.errorbar(x[-1:], mean[-1:], yerr=std[-1:], marker="*", ms=10, color=color, capsize=3)  # final evaluation
    ax.axhline(dataset_return, ls=":", color="gray", label=f"dataset mean ({dataset_return:.0f})")
    ax.set_xlabel("env steps (online)")
    ax.set_ylabel("eval return (star: final evaluation)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``)."""
    cut = int(0.25 * x.size)
    return float(np.sort(x)[cut : x.size - cut].mean())


def _stats(returns: list[float]) -> dict[str, float]:
    """Mean, std, IQM and a bootstrap 95% interval of the IQM over episodes."""
    x = np.asarray(returns, dtype=np.float64)
    rng = np.random.default_rng(0)
    boot = [_iqm(rng.choice(x, x.size)) for _ in range(2000)]
    return dict(mean=float(x.mean()), std=float(x.std()), iqm=_iqm(x),
                iqm_ci95=[float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))], episodes=int(x.size))  # fmt: skip


def _fmt(st: dict[str, float]) -> str:
    lo, hi = st["iqm_ci95"]
    return f"{st['mean']:7.1f} +- {st['std']:5.1f} (IQM {st['iqm']:7.1f} [{lo:.1f}, {hi:.1f}])"


def _verdict(expo: dict[str, dict], sac: dict[str, dict]) -> str:
    """One plain sentence per mode: is EXPO above, below or level with SAC (disjoint IQM intervals or not)?"""
    lines = []
    for mode in expo:
        (elo, ehi), (slo, shi) = expo[mode]["iqm_ci95"], sac[mode]["iqm_ci95"]
        if elo > shi:
            call = "EXPO is above SAC"
        elif ehi < slo:
            call = "EXPO is BELOW SAC"
        else:
            call = "EXPO and SAC are level (their IQM intervals overlap)"
        lines.append(f"{mode}: {call}")
    return "; ".join(lines)


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

    from sb3_expo import EXPO, get_preset
    from sb3_expo.callbacks import BothModesEvalCallback, evaluate_both_modes
    from sb3_expo.datasets.make_minari import episode_returns, make_minari_dataset
    from sb3_expo.wrappers import MinariReplayBuffer, minari_datasets_root

    th.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    progress = not args.no_progress
    timings: dict[str, float] = {}
    eval_seed = args.seed + 10_000  # the same evaluation episodes for both algorithms, both modes, every point

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

    def curve_callback() -> BothModesEvalCallback:
        return BothModesEvalCallback(
            gym.make(ENV_ID), eval_freq=args.eval_freq, n_eval_episodes=args.curve_episodes, seed=eval_seed,
            eval_at_start=True, verbose=1,
        )  # fmt: skip

    def final_evaluation(model: Any, name: str, callback: BothModesEvalCallback) -> dict[str, dict]:
        returns = evaluate_both_modes(model, gym.make(ENV_ID), args.eval_episodes, seed=eval_seed)
        if callback.history and callback.history[-1][0] == model.num_timesteps:
            callback.history.pop()  # the curve's last point is replaced by the longer final evaluation
        callback.history.append((int(model.num_timesteps), returns))
        result = {mode: _stats(r) for mode, r in returns.items()}
        for mode, st in result.items():
            print(f"{name} final, {mode:>13s}: {_fmt(st)} over {args.eval_episodes} episodes")
        return result

    # 2. EXPO: pretrain the base policy, then fine-tune online with the 50/50 buffer
    preset = get_preset("tiny" if args.quick else "cpu", learning_starts=args.learning_starts)
    model = EXPO("MlpPolicy", ENV_ID, seed=args.seed, verbose=0, **buffer, **preset)
    t = time.perf_counter()
    model.pretrain(args.pretrain_steps, progress_bar=progress)
    timings["expo_pretrain_s"] = time.perf_counter() - t
    expo_cb = curve_callback()
    t = time.perf_counter()
    model.learn(args.steps, callback=expo_cb, progress_bar=progress)
    timings["expo_online_s"] = time.perf_counter() - t
    t = time.perf_counter()
    expo_final = final_evaluation(model, "EXPO", expo_cb)
    timings["expo_final_eval_s"] = time.perf_counter() - t
    model_path = os.path.join(args.out, "expo_pendulum.zip")
    model.save(model_path)
    print(f"EXPO saved to {model_path}")

    # 3. baseline: SAC (SB3 defaults) on the same env steps with the same 50/50 buffer
    baseline: dict[str, Any] = {"algo": "none"}
    curves = {"EXPO (cpu preset, pretrained base)": {m: expo_cb.curve(m) for m in MODE_STYLES}}
    if args.baseline == "sac":
        sac = SAC("MlpPolicy", ENV_ID, seed=args.seed, verbose=0, learning_starts=args.learning_starts, **buffer)
        sac_cb = curve_callback()
        t = time.perf_counter()
        sac.learn(args.steps, callback=sac_cb, progress_bar=progress)
        timings["sac_online_s"] = time.perf_counter() - t
        sac_final = final_evaluation(sac, "SAC ", sac_cb)
        sac_path = os.path.join(args.out, "sac_pendulum.zip")
        sac.save(sac_path)
        curves["SAC (same buffer)"] = {m: sac_cb.curve(m) for m in MODE_STYLES}
        baseline = dict(
            algo="SAC",
            description="SB3 SAC defaults (2 critics, 1 gradient step per env step, batch 256), same 50/50 offline buffer, no pretraining",
            final=sac_final,
            curves=curves["SAC (same buffer)"],
            model_path=sac_path,
            expo_vs_sac=_verdict(expo_final, sac_final),
        )

    # 4. plot and summary
    png = os.path.join(args.out, "learning_curve.png")
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
            eval_episodes_per_mode=args.eval_episodes,
            curve_episodes_per_mode=args.curve_episodes,
            eval_modes=list(MODE_STYLES),
            eval_reset_seed=eval_seed,
            torch_threads=args.threads,
        ),
        expo=dict(final=expo_final, curves=curves["EXPO (cpu preset, pretrained base)"], model_path=model_path),
        baseline=baseline,
        learning_curve_png=png,
        timings=timings,
        machine=dict(cpu_count=os.cpu_count(), load_average_at_end=load, python=platform.python_version(), torch=th.__version__),
    )
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("\n==== main job summary ====")
    print(f"dataset  {dataset_id}: mean return {dataset_returns.mean():.1f} ({dataset.total_episodes} episodes)")
    print(f"final evaluation: {args.eval_episodes} episodes per mode, the same reset seeds for every model and mode")
    for mode in MODE_STYLES:
        print(f"EXPO {mode:>13s}  {args.pretrain_steps} pretrain + {args.steps} online steps: {_fmt(expo_final[mode])}")
    if baseline["algo"] != "none":
        for mode in MODE_STYLES:
            print(f"SAC  {mode:>13s}  {args.steps} online steps (same buffer):  {_fmt(baseline['final'][mode])}")
        print(f"verdict: {baseline['expo_vs_sac']}")
    print(f"wall time {timings['total_s']:.0f} s; files: {model_path}, {png}, {os.path.join(args.out, 'summary.json')}")
    return summary


def main(argv: Optional[list[str]] = None) -> None:
    """Command-line entry point."""
    run(argv)


if __name__ == "__main__":
    main()
