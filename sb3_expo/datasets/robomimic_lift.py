"""
A small robomimic-layout Lift dataset from a scripted controller (no download, no human demos).

Command::

    python -m sb3_expo.datasets.robomimic_lift --out data/lift_scripted.hdf5 --n-demos 10 --seed 0 --noise 0.05

The file has exactly robomimic's HDF5 layout, so robomimic's own ``SequenceDataset`` and
:func:`sb3_expo.wrappers.load_robomimic_dataset` read it, and its ``data.attrs["env_args"]`` recreates the env
(:func:`sb3_expo.envs.make_robomimic_env`)::

    data/  attrs: total, env_args (JSON)
      demo_0/  attrs: num_samples, model_file
        obs/<key>, next_obs/<key>   (T, d) float64, every robomimic low-dim key (object, robot0_eef_pos, ...)
        actions (T, 7), rewards (T,), dones (T,), states (T, 1 + nq + nv)
    mask/successful   demo names (bytes)

Demos end at the first success (the env terminates there), so ``rewards`` / ``dones`` are 1 only on the last row.
By default only successful demos are written (``n_demos`` of them); ``keep_failed=True`` also writes the failed
attempts and lists them under ``mask/failed``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sb3_expo.envs.robomimic_env import (
    DEFAULT_OBS_KEYS,
    RobomimicEnv,
    default_env_args,
    env_horizon,
    make_robomimic_env,
)
from sb3_expo.utils.atomic_io import atomic_path

# OSC_POSE maps an action of 1 to a 5 cm position step (controller output_max).
_POS_SCALE = 0.05


class ScriptedLiftController:
    """
    Reach above the cube, descend, close the gripper, lift: a proportional controller on robomimic's low-dim
    observation dict (``robot0_eef_pos``, ``object`` = cube pos, quat, ...), with Gaussian action noise.

    :param noise: standard deviation of the Gaussian noise added to every action dimension (before clipping)
    :param rng: noise generator
    :param gain: proportional gain (action per ``_POS_SCALE`` metres of position error)
    :param hover: height above the cube centre at the end of the reach phase (m)
    :param lift_height: lift target above the grasp height (m)
    :param grasp_steps: steps spent closing the gripper before lifting
    """

    def __init__(
        self,
        noise: float = 0.05,
        rng: np.random.Generator | None = None,
        gain: float = 1.0,
        hover: float = 0.08,
        lift_height: float = 0.2,
        grasp_steps: int = 10,
    ) -> None:
        self.noise = float(noise)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.gain = gain
        self.hover = hover
        self.lift_height = lift_height
        self.grasp_steps = grasp_steps
        self.reset()

    def reset(self) -> None:
        """Start a new episode (reach phase)."""
        self.phase = "reach"
        self.phase_steps = 0
        self._lift_target: np.ndarray | None = None

    def _goto(self, eef: np.ndarray, target: np.ndarray, max_speed: float = 1.0) -> np.ndarray:
        return np.clip(self.gain * (target - eef) / _POS_SCALE, -max_speed, max_speed)

    def clean_action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """
        :param obs: robomimic low-dim observation dict
        :return: the noiseless ``(7,)`` action (3 position deltas, 3 rotation deltas = 0, gripper: -1 open, 1 close)
        """
        eef = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
        cube = np.asarray(obs["object"][:3], dtype=np.float64)
        action = np.zeros(7)
        self.phase_steps += 1
        if self.phase == "reach":
            target = cube + np.array([0.0, 0.0, self.hover])
            action[:3], action[6] = self._goto(eef, target), -1.0
            err = target - eef
            if (np.linalg.norm(err[:2]) < 0.01 and abs(err[2]) < 0.02) or self.phase_steps > 60:
                self.phase, self.phase_steps = "descend", 0
        elif self.phase == "descend":
            target = cube.copy()  # the grip site between the fingertips goes to the cube centre
            action[:3], action[6] = self._goto(eef, target, max_speed=0.6), -1.0
            if abs(target[2] - eef[2]) < 0.01 or self.phase_steps > 40:
                self.phase, self.phase_steps = "grasp", 0
        elif self.phase == "grasp":
            action[:3], action[6] = self._goto(eef, cube), 1.0
            if self.phase_steps >= self.grasp_steps:
                self.phase, self.phase_steps = "lift", 0
                self._lift_target = eef + np.array([0.0, 0.0, self.lift_height])
        else:  # lift
            assert self._lift_target is not None
            action[:3], action[6] = self._goto(eef, self._lift_target), 1.0
        return action

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """
        :param obs: robomimic low-dim observation dict
        :return: the noisy action, clipped to ``[-1, 1]`` (what is executed and stored)
        """
        action = self.clean_action(obs)
        if self.noise > 0:
            action = action + self.noise * self.rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0)


def _rollout(env: Any, controller: ScriptedLiftController, seed: int) -> dict[str, Any]:
    """One episode; returns the robomimic demo arrays (obs/next_obs dicts of all low-dim keys)."""
    base: RobomimicEnv = env.unwrapped
    env.reset(seed=seed)
    controller.reset()
    model_xml = base.robosuite_env.sim.model.get_xml()
    obs_seq: list[dict[str, np.ndarray]] = []
    next_seq: list[dict[str, np.ndarray]] = []
    actions, rewards, dones, states = [], [], [], []
    success = False
    while True:
        obs = base.last_obs_dict
        states.append(np.array(base.robosuite_env.sim.get_state().flatten()))
        action = controller(obs)
        _, reward, terminated, truncated, info = env.step(action)
        obs_seq.append(obs)
        next_seq.append(base.last_obs_dict)
        actions.append(action)
        rewards.append(reward)
        dones.append(int(terminated))
        success = bool(info["success"])
        if terminated or truncated:
            break
    keys = list(obs_seq[0])
    return {
        "obs": {k: np.stack([o[k] for o in obs_seq]) for k in keys},
        "next_obs": {k: np.stack([o[k] for o in next_seq]) for k in keys},
        "actions": np.asarray(actions, dtype=np.float64),
        "rewards": np.asarray(rewards, dtype=np.float64),
        "dones": np.asarray(dones, dtype=np.int64),
        "states": np.asarray(states, dtype=np.float64),
        "model_file": model_xml,
        "success": success,
    }


def write_scripted_lift_dataset(
    path: str | os.PathLike[str],
    n_demos: int = 10,
    seed: int = 0,
    noise: float = 0.05,
    *,
    keep_failed: bool = False,
    max_attempts: int | None = None,
    horizon: int | None = None,
    obs_keys: Sequence[str] = DEFAULT_OBS_KEYS,
    verbose: bool = False,
) -> dict[str, Any]:
    """
    Roll out :class:`ScriptedLiftController` in robosuite Lift and write a robomimic-layout HDF5 file.

    :param path: output ``.hdf5`` file (parent folders are created; an existing file is overwritten)
    :param n_demos: number of successful demos to write
    :param seed: seeds the cube placements (attempt ``i`` resets with ``seed + i``) and the action noise
    :param noise: standard deviation of the Gaussian action noise (actions are clipped to ``[-1, 1]``)
    :param keep_failed: also write failed attempts (listed in ``mask/failed``; ``mask/successful`` lists the rest)
    :param max_attempts: stop after this many episodes even with fewer than ``n_demos`` successes
        (default ``3 * n_demos + 10``)
    :param horizon: episode step limit, stored as ``env_kwargs["horizon"]`` (default 400, robomimic's Lift horizon)
    :param obs_keys: keys of the env's flat observation (does not change what is stored: every low-dim key is)
    :param verbose: print one line per episode
    :return: stats: ``n_demos`` (successful demos written), ``n_attempts``, ``success_rate`` (of the scripted
        controller over all attempts), ``mean_length`` (successful demos), ``total`` (rows written),
        ``steps_per_second``, ``path``
    """
    import h5py  # local: only needed to write

    if n_demos < 1:
        raise ValueError(f"n_demos must be >= 1, got {n_demos}.")
    max_attempts = 3 * n_demos + 10 if max_attempts is None else int(max_attempts)
    env_args = default_env_args("Lift", horizon=horizon)
    env = make_robomimic_env(env_args, obs_keys=obs_keys)
    controller = ScriptedLiftController(noise=noise, rng=np.random.default_rng(seed))

    episodes: list[dict[str, Any]] = []
    n_attempts, n_success, n_steps = 0, 0, 0
    start = time.perf_counter()
    try:
        while n_success < n_demos and n_attempts < max_attempts:
            episode = _rollout(env, controller, seed=seed + n_attempts)
            n_attempts += 1
            n_steps += len(episode["actions"])
            n_success += episode["success"]
            if verbose:
                outcome = "success" if episode["success"] else "failure"
                print(f"attempt {n_attempts}: {outcome}, {len(episode['actions'])} steps")
            if episode["success"] or keep_failed:
                episodes.append(episode)
        elapsed = time.perf_counter() - start
        stored_env_args = env.unwrapped.env_args  # the kwargs actually used (headless, sparse reward, horizon)
    finally:
        env.close()

    path = os.fspath(path)
    successful, failed = [], []
    # Atomic: written to a temporary file in the same folder, then renamed onto ``path`` (a failed write keeps the
    # previous file).
    with atomic_path(path, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        total = 0
        for i, episode in enumerate(episodes):
            name = f"demo_{i}"
            demo = data.create_group(name)
            for group in ("obs", "next_obs"):
                grp = demo.create_group(group)
                for key, value in episode[group].items():
                    grp.create_dataset(key, data=value)
            for key in ("actions", "rewards", "dones", "states"):
                demo.create_dataset(key, data=episode[key])
            demo.attrs["num_samples"] = len(episode["actions"])
            demo.attrs["model_file"] = episode["model_file"]
            total += len(episode["actions"])
            (successful if episode["success"] else failed).append(name)
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(stored_env_args)
        mask = f.create_group("mask")
        mask.create_dataset("successful", data=np.array(successful, dtype="S"))
        if keep_failed:
            mask.create_dataset("failed", data=np.array(failed, dtype="S"))
        lengths = [len(e["actions"]) for e in episodes if e["success"]]
        stats = {
            "path": path,
            "n_demos": len(successful),
            "n_failed_written": len(failed),
            "n_attempts": n_attempts,
            "success_rate": n_success / max(n_attempts, 1),
            "mean_length": float(np.mean(lengths)) if lengths else float("nan"),
            "total": total,
            "horizon": env_horizon(stored_env_args),
            "steps_per_second": n_steps / max(elapsed, 1e-9),
            "seed": seed,
            "noise": noise,
        }
        # Provenance only (robomimic ignores unknown attributes).
        data.attrs["sb3_expo_scripted_stats"] = json.dumps(stats)
    if len(successful) < n_demos:
        warnings.warn(
            f"Only {len(successful)}/{n_demos} successful demos in {n_attempts} attempts (noise={noise}). "
            "Fix: lower --noise or raise --max-attempts.",
            stacklevel=2,
        )
    return stats


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point (``python -m sb3_expo.datasets.robomimic_lift --help``)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--out", required=True, help="output .hdf5 path")
    parser.add_argument("--n-demos", type=int, default=10, help="successful demos to write (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.05, help="std of the Gaussian action noise (default 0.05)")
    parser.add_argument("--keep-failed", action="store_true", help="also write failed attempts (mask/failed)")
    parser.add_argument("--max-attempts", type=int, default=None)
    parser.add_argument("--horizon", type=int, default=None, help="episode step limit (default 400)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    stats = write_scripted_lift_dataset(
        args.out,
        n_demos=args.n_demos,
        seed=args.seed,
        noise=args.noise,
        keep_failed=args.keep_failed,
        max_attempts=args.max_attempts,
        horizon=args.horizon,
        verbose=args.verbose,
    )
    print(json.dumps(stats, indent=2))
    return stats


if __name__ == "__main__":
    main()
