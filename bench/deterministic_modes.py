"""Deterministic-mode designs of EXPO, side by side on trained models, against stochastic on-the-fly acting.

``predict(deterministic=True)`` must be repeatable (same observation and parameters, same action) and score at
least as well as the stochastic on-the-fly policy the paper evaluates with. This script evaluates every design on
the same reset seeds and reports the IQM of the episode returns with a bootstrap 95% interval; a design passes when
its IQM lies within or above the stochastic interval.

Designs (``OTFConfig`` fields set on the loaded policy; nothing is retrained):

* ``stochastic``: fresh noise per call, edits sampled, a random pair of critics (the paper's evaluation);
* ``fixed draw, mean edits, pair``: one seeded draw for every state, edits at their mean, one critic pair for all
  states (the former deterministic mode);
* ``keyed noise, mean edits, all critics``: diffusion noise keyed by a hash of each observation, edits at their
  mean, candidates scored by the mean of all critics (the ensemble's best estimate);
* ``keyed noise, mean edits, keyed pair``: the same with a critic pair per state, keyed;
* ``keyed everything``: diffusion noise, edit noise and critic pair all keyed by the observation: the stochastic
  policy made repeatable (the default);
* ``keyed everything, all critics``: the same, scored by the mean of all critics.

Models::

    python -m bench.deterministic_modes --main-job                     # logs/main_job/expo_pendulum.zip
    python -m bench.deterministic_modes --bench-tasks pendulum mountaincar   # bench/cache/runs/<task>/expo/*.final.zip
    python -m bench.deterministic_modes --model path.zip --env Pendulum-v1

Writes ``bench/results/deterministic_modes.{md,json}`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Any, Optional

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.metrics import Interval, bootstrap_ci
from bench.sample_efficiency import evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]
DESIGNS: dict[str, Optional[dict[str, Any]]] = {
    "stochastic": None,
    "fixed draw, mean edits, pair": dict(deterministic_noise="fixed", deterministic_edits="mean", deterministic_critics="subset"),
    "keyed noise, mean edits, all critics": dict(deterministic_noise="observation", deterministic_edits="mean",
                                                 deterministic_critics="all"),
    "keyed noise, mean edits, keyed pair": dict(deterministic_noise="observation", deterministic_edits="mean",
                                                deterministic_critics="subset"),
    "keyed everything": dict(deterministic_noise="observation", deterministic_edits="sample", deterministic_critics="subset"),
    "keyed everything, all critics": dict(deterministic_noise="observation", deterministic_edits="sample",
                                          deterministic_critics="all"),
}  # fmt: skip
BEFORE, DEFAULT = "fixed draw, mean edits, pair", "keyed everything"


def set_design(model: Any, design: Optional[dict[str, Any]]) -> None:
    """Point the policy's deterministic mode at ``design`` (no-op for the stochastic mode)."""
    if design is None:
        return
    fields = dict(design)
    factor = fields.pop("n_factor", None)
    otf = model.policy.otf
    fields["deterministic_n_action_samples"] = otf.n_action_samples * factor if factor else None
    model.policy.otf = dataclasses.replace(otf, **fields)


def evaluate_designs(models: list[pathlib.Path], env_id: str, episodes: int, seed: int, minari_path: Optional[str]) -> dict[str, list[float]]:
    """Every design's episode returns over all ``models`` (``episodes`` each, the same reset seeds)."""
    import gymnasium as gym

    from sb3_expo import EXPO

    if minari_path:
        os.environ["MINARI_DATASETS_PATH"] = minari_path
    returns: dict[str, list[float]] = {name: [] for name in DESIGNS}
    for path in models:
        model = EXPO.load(path, device="cpu")
        original = model.policy.otf
        env = gym.make(env_id)
        for name, design in DESIGNS.items():
            model.policy.otf = original
            set_design(model, design)
            t0 = time.time()
            rets = evaluate(model, env, episodes, seed, deterministic=design is not None)
            returns[name] += rets
            print(f"{path.name} [{name}]: mean {np.mean(rets):.1f} ({time.time() - t0:.0f} s)", flush=True)
    return returns


def summarise(returns: dict[str, list[float]], n_models: int, episodes: int) -> dict[str, Any]:
    """IQM [95% CI], mean and the verdict against stochastic of every design (the JSON record of one model set)."""
    cis: dict[str, Interval] = {name: bootstrap_ci(r) for name, r in returns.items()}
    sto = cis["stochastic"]
    designs: dict[str, Any] = {}
    for name, ci in cis.items():
        if name == "stochastic":
            verdict = "-"
        else:
            verdict = "above" if ci.point > sto.high else ("within" if ci.point >= sto.low else "BELOW")
        designs[name] = dict(iqm=ci.point, low=ci.low, high=ci.high, mean=float(np.mean(returns[name])),
                             verdict=verdict, returns=returns[name])  # fmt: skip
    return dict(n_models=n_models, episodes=episodes, designs=designs)


def markdown(records: dict[str, Any], threads: int) -> str:
    lines = ["# Deterministic-mode designs (generated by `python -m bench.deterministic_modes`)", ""]
    for title, rec in records.items():
        lines += [f"### {title}", "", f"{rec['n_models']} model(s) x {rec['episodes']} episodes per design, the same "
                  "reset seeds for every design.", "", "| design | IQM [95% CI] | mean | vs stochastic |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, d in rec["designs"].items():
            tag = " (default)" if name == DEFAULT else (" (before)" if name == BEFORE else "")
            lines.append(f"| {name}{tag} | {d['iqm']:.1f} [{d['low']:.1f}, {d['high']:.1f}] | {d['mean']:.1f} | "
                         f"{d['verdict']} |")  # fmt: skip
        lines.append("")
    lines.append("`vs stochastic`: `above` / `within` / `BELOW` = the design's IQM lies above / inside / below the "
                 f"stochastic mode's 95% interval. CPU, {threads} torch thread(s).")  # fmt: skip
    return "\n".join(lines) + "\n"


def bench_models(task: str, cache: pathlib.Path) -> tuple[list[pathlib.Path], str, str]:
    from bench.sample_efficiency import TASKS

    models = sorted((cache / "runs" / task / "expo").glob("seed*.final.zip"))
    if not models:
        raise SystemExit(f"no trained EXPO models for {task} under {cache}: run `python -m bench.sample_efficiency "
                         f"--tasks {task} --methods expo` first")  # fmt: skip
    return models, TASKS[task].env_id, str(cache / "minari")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--main-job", action="store_true", help="the main job's model (logs/main_job/expo_pendulum.zip)")
    p.add_argument("--bench-tasks", nargs="*", default=[], help="tasks of bench/sample_efficiency.py (their EXPO models)")
    p.add_argument("--model", type=pathlib.Path, default=None, help="any EXPO .zip (with --env)")
    p.add_argument("--env", default=None, help="env id of --model")
    p.add_argument("--episodes", type=int, default=30, help="episodes per design and model")
    p.add_argument("--seed", type=int, default=20_000, help="reset seed of the first episode")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", type=pathlib.Path, default=REPO / "bench" / "cache")
    p.add_argument("--out", type=pathlib.Path, default=REPO / "bench" / "results" / "deterministic_modes")
    args = p.parse_args(argv)
    import torch as th

    th.set_num_threads(args.threads)
    sets: list[tuple[str, list[pathlib.Path], str, Optional[str]]] = []
    if args.main_job:
        sets.append(("main job model (Pendulum-v1, logs/main_job/expo_pendulum.zip)",
                     [REPO / "logs" / "main_job" / "expo_pendulum.zip"], "Pendulum-v1", None))  # fmt: skip
    for task in args.bench_tasks:
        models, env_id, minari = bench_models(task, args.cache_dir.resolve())
        sets.append((f"bench task {task} ({env_id}), EXPO's final models", models, env_id, minari))
    if args.model:
        if not args.env:
            raise SystemExit("--model needs --env (the env id the model was trained on)")
        sets.append((f"{args.model} ({args.env})", [args.model], args.env, None))
    if not sets:
        raise SystemExit("nothing to evaluate: give --main-job, --bench-tasks and/or --model")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md, js = args.out.with_suffix(".md"), args.out.with_suffix(".json")
    records = json.loads(js.read_text()) if js.exists() else {}  # model sets evaluated earlier are kept
    for title, models, env_id, minari in sets:
        returns = evaluate_designs(models, env_id, args.episodes, args.seed, minari)
        records[title] = summarise(returns, len(models), args.episodes)
        js.write_text(json.dumps(records, indent=1))
        md.write_text(markdown(records, args.threads))
    print(md.read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
