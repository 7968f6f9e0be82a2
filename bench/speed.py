"""End-to-end speed of EXPO beside SAC, side by side in one run on one device (issues 20 and 21).

On a cheap env built here (obs 39, act 7 in [-1, 1], random numpy dynamics, 200-step episodes), for each config:
  - ms per env step: wall time of ``model.learn(--steps, reset_num_timesteps=False)`` / --steps, after an untimed
    warm-up ``learn(learning_starts + --warmup)`` (CUDA init and compilation happen there);
  - acting latency p50 / p90 of ``model.predict(obs, deterministic=False)`` for one observation, after warm-up calls.
Configs: EXPO at --preset in fp32, TF32 and bf16 (CUDA only) and compiled; SB3 SAC at UTD 1 and with 10 critics at
UTD 20 (what an RLPD-style learner costs). The issue-21 targets are judged on CUDA with the reference preset only.

Usage::

    python bench/speed.py --device cpu --threads 1     # CPU, cpu preset: a few minutes on 2 cores
    python bench/speed.py --device cuda                # GPU, reference preset: sized for < 4 min on an H100
    python bench/speed.py --smoke                      # tiny preset, few steps: checks that the script runs
    bash bench/gpu_check.sh                            # GPU tests + this bench + the main job, one JSON
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import pathlib
import platform
import sys
import time

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import SAC

from sb3_expo import EXPO

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the baseline first, compilation (slowest to warm up, likeliest to fail) last
CONFIGS = ["sac_utd1", "expo_fp32", "expo_tf32", "expo_bf16", "sac_10critic_utd20", "expo_compiled"]
CUDA_ONLY = {"expo_tf32", "expo_bf16"}
SAC_NET = [256, 256, 256]


class CheapEnv(gym.Env):
    """obs 39, act 7 in [-1, 1], obs_{t+1} = 0.9 obs_t + noise + a small action effect, 200-step episodes."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
    mix = np.random.default_rng(0).standard_normal((7, 39)).astype(np.float32) * 0.1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.obs, self.t = self.np_random.standard_normal(39).astype(np.float32), 0
        return self.obs.copy(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self.obs = (0.9 * self.obs + 0.1 * self.np_random.standard_normal(39) + action @ self.mix).astype(np.float32)
        self.t += 1
        reward = float(-np.square(self.obs[:7]).mean() - 0.01 * np.square(action).sum())
        return self.obs.copy(), reward, False, self.t >= 200, {}


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 matmuls and convolutions inside the block only (restored after)."""
    old = th.backends.cuda.matmul.allow_tf32, th.backends.cudnn.allow_tf32
    if on:
        th.backends.cuda.matmul.allow_tf32 = th.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        th.backends.cuda.matmul.allow_tf32, th.backends.cudnn.allow_tf32 = old


def build(name: str, env: gym.Env, args: argparse.Namespace):
    common = dict(learning_starts=args.learning_starts, buffer_size=args.buffer_size, seed=0, device=args.device)
    if name.startswith("expo"):
        extra = {"expo_bf16": dict(mixed_precision=True), "expo_compiled": dict(compile=True)}.get(name, {})
        return EXPO("MlpPolicy", env, preset=args.preset, **common, **extra)
    if name == "sac_utd1":
        return SAC("MlpPolicy", env, policy_kwargs=dict(net_arch=SAC_NET), **common)
    return SAC("MlpPolicy", env, policy_kwargs=dict(n_critics=10, net_arch=SAC_NET), gradient_steps=20, batch_size=256, **common)


def measure(name: str, args: argparse.Namespace) -> dict:
    """ms per env step (learn) and acting latency of one config; the warm-up is timed apart."""
    env, sync = CheapEnv(), th.cuda.synchronize if args.device == "cuda" else lambda: None
    with tf32(name == "expo_tf32"):
        start = time.perf_counter()
        model = build(name, env, args)
        model.learn(args.learning_starts + args.warmup)
        obs, _ = CheapEnv().reset(seed=1)
        for _ in range(10):
            model.predict(obs, deterministic=False)
        sync()
        warmup_s = time.perf_counter() - start
        start = time.perf_counter()
        model.learn(args.steps, reset_num_timesteps=False)
        sync()
        ms_step = 1e3 * (time.perf_counter() - start) / args.steps
        lat = []
        for _ in range(args.act_calls):
            t = time.perf_counter()
            model.predict(obs, deterministic=False)  # returns numpy: the device work is finished
            lat.append(1e3 * (time.perf_counter() - t))
    del model
    gc.collect()
    if th.cuda.is_available():
        th.cuda.empty_cache()
    p50, p90 = (float(np.percentile(lat, q)) for q in (50, 90))
    compile_s = warmup_s if name == "expo_compiled" else None
    return dict(ms_per_env_step=ms_step, act_p50_ms=p50, act_p90_ms=p90, compile_s=compile_s, warmup_s=warmup_s)


def device_name(device: str) -> str:
    if device == "cuda":
        return th.cuda.get_device_name(0)
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def judge(results: dict, args: argparse.Namespace) -> dict | None:
    """The issue-21 targets, on CUDA with the reference preset only (None elsewhere and in a smoke run)."""
    if args.smoke or args.device != "cuda" or args.preset != "reference":
        return None
    ok = {k: v for k, v in results.items() if "ms_per_env_step" in v}
    expo = {k: v for k, v in ok.items() if k.startswith("expo")}
    if not expo:
        return {}
    fast, quick = (min(expo, key=lambda k, key=key: expo[k][key]) for key in ("ms_per_env_step", "act_p50_ms"))
    checks = [("ms per env step <= 8", fast, expo[fast]["ms_per_env_step"], 8.0, "ms"),
              ("acting p50 <= 1.5 ms", quick, expo[quick]["act_p50_ms"], 1.5, "ms")]
    if "sac_utd1" in ok:
        ratio = expo[fast]["ms_per_env_step"] / ok["sac_utd1"]["ms_per_env_step"]
        checks.append(("EXPO faster per env step than SAC UTD 1", fast, ratio, 1.0, "x sac_utd1"))
    return {target: dict(config=c, value=v, limit=lim, unit=u, met=v < lim if u.startswith("x") else v <= lim)
            for target, c, v, lim, u in checks}


def render(results: dict, targets: dict | None, args: argparse.Namespace) -> str:
    lines = [
        "# sb3-expo speed (bench/speed.py)",
        "",
        f"device: {args.device} - {device_name(args.device)} | torch {th.__version__} | threads {th.get_num_threads()} | "
        f"EXPO preset: {args.preset} | SAC net_arch {SAC_NET}",
        f"env: cheap env (obs 39, act 7, 200-step episodes, numpy dynamics) | learning_starts {args.learning_starts}, "
        f"then {args.warmup} warm-up env steps with updates, {args.steps} timed env steps, {args.act_calls} acting calls",
    ]
    if args.smoke:
        lines.append("SMOKE RUN (tiny preset, few steps): these numbers only check that the script runs; they are not measurements.")
    elif args.device == "cpu":
        gpu = ROOT / "bench" / "results" / "gpu_check.json"
        lines.append(
            f"These are CPU numbers from this {os.cpu_count()}-core machine. GPU numbers come from "
            f"`bash bench/gpu_check.sh` (bench/results/gpu_check.json): {'see that file' if gpu.exists() else 'not measured yet'}. "
            f"Wall-clock times: other jobs on the machine slow them (load average at the end: {os.getloadavg()[0]:.1f})."
        )
    lines += ["", "| config | ms per env step | acting p50 ms | p90 ms | ratio to sac_utd1 (ms/step) |", "|---|---:|---:|---:|---:|"]
    sac = results.get("sac_utd1", {}).get("ms_per_env_step")
    for name, r in results.items():
        if "ms_per_env_step" not in r:
            lines.append(f"| {name} | {r.get('skipped') or 'error: ' + r['error']} | | | |")
            continue
        ratio = f"{r['ms_per_env_step'] / sac:.2f}" if sac else "-"
        lines.append(f"| {name} | {r['ms_per_env_step']:.2f} | {r['act_p50_ms']:.2f} | {r['act_p90_ms']:.2f} | {ratio} |")
    if results.get("expo_compiled", {}).get("compile_s") is not None:
        lines += ["", f"expo_compiled warm-up, compilation included (excluded from ms per env step): "
                  f"{results['expo_compiled']['compile_s']:.1f} s (expo_fp32 warm-up: "
                  f"{results.get('expo_fp32', {}).get('warmup_s', float('nan')):.1f} s)."]
    lines += ["", "Configs: expo_fp32 = EXPO at the preset; expo_tf32 = + TF32 matmuls; expo_bf16 = + mixed_precision (bf16 "
              "diffusion net); expo_compiled = + compile=True; sac_utd1 = SB3 SAC defaults (2 critics, 1 gradient step per "
              "env step); sac_10critic_utd20 = SAC with 10 critics, 20 gradient steps per env step, batch 256.", ""]
    if args.smoke:
        lines.append("Targets (issue 21): not judged in a smoke run.")
    elif targets is None:
        lines.append("Targets (issue 21): targets are judged on CUDA with the reference preset only.")
    else:
        lines.append("## Targets (issue 21, CUDA, reference preset)")
        for target, t in targets.items():
            lines.append(f"- {target}: {t['config']} {t['value']:.2f} {t['unit']}: {'met' if t['met'] else 'NOT met'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--preset", default=None, help="EXPO preset (default: reference on CUDA, cpu on the CPU, tiny with --smoke)")
    parser.add_argument("--steps", type=int, default=None, help="timed env steps per config (default: 200 on CUDA, 50 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed env steps with updates after learning_starts (30 on CUDA, 10 on the CPU)")
    parser.add_argument("--learning-starts", type=int, default=None, help="random env steps before updates (default 256)")
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--act-calls", type=int, default=None, help="timed predict calls (default 200)")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=CONFIGS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="default bench/results/speed.json (none with --smoke)")
    parser.add_argument("--markdown", default=None, help="default bench/results/speed.md (none with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny preset, few steps: checks the script, measures nothing")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if th.cuda.is_available() else "cpu"
    if args.device == "cuda" and not th.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    cuda = args.device == "cuda"
    args.preset = args.preset or ("tiny" if args.smoke else "reference" if cuda else "cpu")
    args.steps = args.steps or (5 if args.smoke else 200 if cuda else 50)
    args.warmup = args.warmup if args.warmup is not None else (3 if args.smoke else 30 if cuda else 10)
    args.learning_starts = args.learning_starts or (32 if args.smoke else 256)
    args.act_calls = args.act_calls or (10 if args.smoke else 200)
    if not args.smoke:
        args.json = args.json or str(ROOT / "bench" / "results" / "speed.json")
        args.markdown = args.markdown or str(ROOT / "bench" / "results" / "speed.md")
    if args.threads:
        th.set_num_threads(args.threads)

    results: dict[str, dict] = {}
    for name in args.configs:
        print(f"[speed] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = {"skipped": "n/a (CUDA only)"} if name in CUDA_ONLY and not cuda else measure(name, args)
        except Exception as exc:  # a config that fails (e.g. compile on this torch) is recorded, the rest go on
            results[name] = {"error": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:300].replace("|", "/")}
        print(f"[speed] {name}: {results[name]}", file=sys.stderr, flush=True)
        write_json(results, None, args, partial=True)  # a run cut short still leaves its numbers
    targets = judge(results, args)
    text = render(results, targets, args)
    print(text)
    write_json(results, targets, args, partial=False)
    if args.markdown:
        pathlib.Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.markdown).write_text(text)
    return 0


def write_json(results: dict, targets: dict | None, args: argparse.Namespace, partial: bool) -> None:
    if args.json:
        keys = ("preset", "steps", "warmup", "learning_starts", "act_calls", "smoke")
        payload = {"device": device_name(args.device), "device_type": args.device, "torch": th.__version__,
                   "threads": th.get_num_threads(), **{k: getattr(args, k) for k in keys},
                   "configs": results, "targets": targets, "partial": partial}
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
