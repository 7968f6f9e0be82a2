"""Is reduced precision safe for EXPO's sampler? The max-Q choice under bf16 autocast (and TF32 on CUDA) vs float32.

``python -m bench.precision [--model logs/main_job/expo_pendulum.zip] [--states 4096]`` draws the TD-target
candidates of many states twice with the SAME noise (keyed by the observation, as the deterministic mode), once in
float32 and once in reduced precision, scores both sets with the same float32 critics and the same critic pair per
state, and reports how often the chosen candidate is the same one, how far the chosen actions are apart, and the
relative error of the chosen Q value. bf16 autocast covers the diffusion network only (what ``mixed_precision=True``
does); TF32 (CUDA only) covers every float32 matmul. States: the replay buffer's next observations when the model was
saved with one, else observations from rollouts of the model itself.

Writes ``bench/results/precision.json`` (``--out``) and prints one table. The model defaults to the main job's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import platform
import sys

import gymnasium as gym
import numpy as np
import torch as th

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sb3_expo import EXPO  # noqa: E402
from sb3_expo.keyed_noise import critic_subsets, diffusion_noise, edit_noise, observation_keys  # noqa: E402
from sb3_expo.otf import draw_candidates, select_candidates  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "precision.json"


def cpu_name() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines() if pathlib.Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def rollout_states(model: EXPO, n: int, seed: int = 0) -> np.ndarray:
    """``n`` observations visited by the model's own stochastic policy (a fresh env)."""
    env = model.get_env()
    env.seed(seed)
    obs, states = env.reset(), []
    while len(states) * env.num_envs < n:
        states.append(obs)
        obs, *_ = env.step(model.predict(obs, deterministic=False)[0])
    return np.concatenate(states)[:n]


@contextlib.contextmanager
def tf32(enabled: bool):
    old = th.backends.cuda.matmul.allow_tf32, th.backends.cudnn.allow_tf32
    th.backends.cuda.matmul.allow_tf32 = th.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        th.backends.cuda.matmul.allow_tf32, th.backends.cudnn.allow_tf32 = old


def choose(model: EXPO, obs: th.Tensor, bf16: bool = False, use_tf32: bool = False):
    """The OTF choice for the TD target (online base, target critics), every draw keyed by the observation."""
    policy, otf = model.policy, model.otf_config
    with th.no_grad(), tf32(use_tf32):
        x = policy.preprocess(obs)
        base, critic = policy.base_policy, policy.q_ensemble_target
        keys = observation_keys(x, otf.deterministic_seed)
        n, dim = otf.n_action_samples, base.action_dim
        noise = diffusion_noise(keys, base.n_diffusion_steps, n, dim)
        edits = edit_noise(keys, otf.n_edit_samples, dim)
        with th.autocast(model.device.type, dtype=th.bfloat16, enabled=bf16):
            candidates = draw_candidates(policy.backend, base, policy.edit_policy, base.features_extractor(x),
                                         policy.edit_policy.features_extractor(x), otf, base_noise=noise,
                                         edit_noise=edits)  # fmt: skip
        members = critic_subsets(keys, critic.n_critics, otf.num_min_qs)
        with tf32(False):  # the critics score in float32 in every configuration
            return select_candidates(policy.backend, critic, critic.features_extractor(x), candidates.float(), otf,
                                     row_members=members)  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", default="logs/main_job/expo_pendulum.zip")
    parser.add_argument("--env", default="Pendulum-v1", help="the env the model was trained on (for the rollouts)")
    parser.add_argument("--states", type=int, default=4096)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if not pathlib.Path(args.model).is_file():
        raise SystemExit(f"{args.model} does not exist: run `python -m sb3_expo.main_job` first, or pass --model.")
    model = EXPO.load(args.model, device=args.device, env=gym.make(args.env))
    obs = th.as_tensor(rollout_states(model, args.states), device=model.device)
    reference = choose(model, obs)
    configs = {"bf16 autocast (diffusion)": dict(bf16=True)}
    if model.device.type == "cuda":
        configs.update({"TF32 (all matmuls)": dict(use_tf32=True), "bf16 + TF32": dict(bf16=True, use_tf32=True)})
    rows = {}
    for name, kwargs in configs.items():
        chosen = choose(model, obs, **kwargs)
        same = (chosen.index == reference.index).float().mean().item()
        action_gap = (chosen.actions - reference.actions).abs().max(dim=1).values
        q_error = ((chosen.q_values - reference.q_values).abs() / reference.q_values.abs().clamp_min(1e-6))
        rows[name] = dict(same_choice=same, action_gap_median=action_gap.median().item(),
                          action_gap_p99=action_gap.quantile(0.99).item(), q_rel_error_median=q_error.median().item())  # fmt: skip
    device = th.cuda.get_device_name(0) if model.device.type == "cuda" else cpu_name()
    result = dict(model=args.model, device=device, torch=th.__version__, states=len(obs), configs=rows)
    print(f"# max-Q choice under reduced precision vs float32 ({len(obs)} states of {args.model}; {device})\n")
    print("| precision | same candidate chosen | chosen action gap, median / p99 | Q of the choice, median rel. error |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['same_choice']:.1%} | {r['action_gap_median']:.4f} / {r['action_gap_p99']:.4f} | "
              f"{r['q_rel_error_median']:.2e} |")  # fmt: skip
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
