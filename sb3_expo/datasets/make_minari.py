"""Write a small, real Minari dataset from a scripted (noisy) controller, with minari's own ``DataCollector``.

Command line::

    python -m sb3_expo.datasets.make_minari --env Pendulum-v1 --episodes 20 --quality medium \\
        --dataset-id sb3-expo/pendulum-medium-v0

Without ``--quality``, ``--episodes`` and ``--dataset-id`` it writes the env's demo dataset, the one
``zoo_configs/*.yml`` and the main job read (``sb3-expo/pendulum-medium-v0``, ``sb3-expo/mountaincar-expert-v0``,
``sb3-expo/pointmaze-umaze-expert-v0``).

The dataset is written under ``$MINARI_DATASETS_PATH/<dataset-id>`` (default ``~/.minari/datasets``). Episodes end
as the env ends them: ``TimeLimit`` cuts are truncations (Pendulum never terminates), reaching the flag in
MountainCar or the goal in PointMaze is a termination. PointMaze (gymnasium-robotics) is recorded on its demo task,
``DEMO_ENV_KWARGS`` in ``controllers.py`` (sparse reward, fixed start and goal, the episode ends at the goal), with its
Dict observations as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from sb3_expo.datasets.controllers import (
    CONTROLLERS,
    DEMO_DATASETS,
    DEMO_ENV_KWARGS,
    QUALITY_PRESETS,
    Controller,
    NoisyController,
)


def _register_robotics_envs(env_id: str) -> None:
    """Register gymnasium-robotics' envs (PointMaze, ...) if ``env_id`` is not known yet and the package is installed."""
    if env_id in gym.registry:
        return
    try:
        # its import prints a notice about the Adroit *Dense-v1 rewards (farama_notifications): keep the output clean
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import gymnasium_robotics
    except ImportError:
        return
    gym.register_envs(gymnasium_robotics)


def default_dataset_id(env_id: str, quality: str | None = None) -> str:
    """
    The id of ``env_id``'s demo dataset: ``sb3-expo/<short name>-<quality>-v0`` (``DEMO_DATASETS`` in
    ``controllers.py``), e.g. ``sb3-expo/pendulum-medium-v0`` and ``sb3-expo/mountaincar-expert-v0``, the ids
    ``zoo_configs/*.yml`` and the main job read.

    :param env_id: gymnasium id
    :param quality: ``"expert"``, ``"medium"`` or ``"random"`` (default: the env's demo quality, else ``"medium"``)
    :return: the Minari dataset id
    """
    short, demo_quality, _ = DEMO_DATASETS.get(env_id, (env_id.split("-")[0].lower(), "medium", 20))
    return f"sb3-expo/{short}-{quality or demo_quality}-v0"


def episode_returns(dataset: Any) -> np.ndarray:
    """
    :param dataset: a ``minari.MinariDataset``
    :return: the undiscounted return of each episode
    """
    return np.array([float(np.sum(ep.rewards)) for ep in dataset.iterate_episodes()])


def _dataset_exists(dataset_id: str) -> bool:
    from sb3_expo.data.minari import minari_datasets_root

    return os.path.isdir(os.path.join(minari_datasets_root(), dataset_id, "data"))


@contextlib.contextmanager
def _removed_if_incomplete(dataset_id: str) -> Iterator[None]:
    """Delete the dataset's folder if writing it fails partway: a later call would otherwise reuse a broken dataset
    as an existing one (Minari writes a dataset in place, as a folder; it cannot be renamed into place)."""
    from sb3_expo.data.minari import minari_datasets_root

    try:
        yield
    except BaseException:
        shutil.rmtree(os.path.join(minari_datasets_root(), dataset_id), ignore_errors=True)
        raise


def make_minari_dataset(
    env_id: str,
    dataset_id: str,
    n_episodes: int = 20,
    seed: int = 0,
    noise: float | None = None,
    random_prob: float | None = None,
    quality: str = "medium",
    controller: Controller | None = None,
    overwrite: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    verbose: int = 0,
) -> Any:
    """
    Roll out a scripted controller in ``env_id`` and save the episodes as a Minari dataset.

    Idempotent: if ``dataset_id`` already exists locally it is reused as is (nothing is recomputed, whatever the
    other arguments), unless ``overwrite=True``, which deletes and rewrites it.

    :param env_id: gymnasium id (``Pendulum-v1`` and ``MountainCarContinuous-v0`` have built-in controllers)
    :param dataset_id: Minari id, e.g. ``"sb3-expo/pendulum-medium-v0"`` (namespace/name-vN)
    :param n_episodes: number of episodes to record
    :param seed: seeds the env resets (episode ``i`` uses ``seed + i``) and the noise
    :param noise: Gaussian noise std in scaled [-1, 1] action units (default: from ``quality``)
    :param random_prob: probability of a uniform random action per step (default: from ``quality``)
    :param quality: ``"expert"``, ``"medium"`` or ``"random"``: presets for ``noise`` / ``random_prob``
    :param controller: observation -> action; default: the built-in one for ``env_id``
    :param overwrite: delete and rewrite an existing dataset with this id
    :param env_kwargs: extra keyword arguments for ``gym.make`` (default: the env's ``DEMO_ENV_KWARGS``, if any)
    :param verbose: 1 prints the mean return
    :return: the ``minari.MinariDataset``
    """
    import minari
    from minari.dataset.minari_dataset import parse_dataset_id

    parse_dataset_id(dataset_id)  # fail on a malformed id before rolling out any episode
    if _dataset_exists(dataset_id) and not overwrite:
        dataset = minari.load_dataset(dataset_id)
        if verbose:
            print(f"Reusing existing Minari dataset {dataset_id!r} ({dataset.total_episodes} episodes).")
        return dataset
    if quality not in QUALITY_PRESETS:
        raise ValueError(f"quality must be one of {sorted(QUALITY_PRESETS)}, got {quality!r}.")
    preset_noise, preset_random = QUALITY_PRESETS[quality]
    noise = preset_noise if noise is None else noise
    random_prob = preset_random if random_prob is None else random_prob
    if controller is None:
        if env_id not in CONTROLLERS:
            raise ValueError(
                f"No built-in controller for {env_id!r} (available: {sorted(CONTROLLERS)}). "
                "Fix: pass controller=<observation -> action callable>."
            )
        controller = CONTROLLERS[env_id]
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}.")

    if env_kwargs is None:
        env_kwargs = copy.deepcopy(DEMO_ENV_KWARGS.get(env_id))  # the env keeps references (e.g. maze_map)
    _register_robotics_envs(env_id)
    env = minari.DataCollector(gym.make(env_id, **(env_kwargs or {})), record_infos=False)
    policy = NoisyController(controller, env.action_space, noise=noise, random_prob=random_prob, seed=seed)
    try:
        for episode in range(n_episodes):
            obs, _ = env.reset(seed=seed + episode)
            while True:
                obs, _, terminated, truncated, _ = env.step(policy(obs))
                if terminated or truncated:
                    break
        params = dict(env_id=env_id, n_episodes=n_episodes, seed=seed, noise=noise, random_prob=random_prob)
        # An existing dataset is deleted only now that the new episodes are in hand (a failed rollout keeps it).
        if _dataset_exists(dataset_id):
            minari.delete_dataset(dataset_id)
        with warnings.catch_warnings(), _removed_if_incomplete(dataset_id):
            # minari warns about optional metadata (permalink, e-mail) we do not have.
            warnings.simplefilter("ignore", UserWarning)
            dataset = env.create_dataset(
                dataset_id=dataset_id,
                eval_env=env.env.spec if env_kwargs else env_id,  # with env_kwargs: the spec that holds them
                algorithm_name=f"scripted-{quality}",
                author="sb3-expo",
                author_email="sb3-expo@users.noreply.github.com",
                code_permalink="sb3_expo/datasets/make_minari.py",
                description=f"Scripted controller with noise, written by sb3_expo.datasets.make_minari: {json.dumps(params)}",
            )
    finally:
        env.close()
    if verbose:
        rets = episode_returns(dataset)
        print(
            f"Wrote Minari dataset {dataset_id!r}: {dataset.total_episodes} episodes, {dataset.total_steps} steps, "
            f"return {rets.mean():.1f} +- {rets.std():.1f}"
        )
    return dataset


def main(argv: list[str] | None = None) -> float:
    """
    Command-line entry point.

    :param argv: arguments (default: ``sys.argv[1:]``)
    :return: the mean episode return of the dataset
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1", choices=sorted(CONTROLLERS))
    demo = "default: the env's demo dataset's, as zoo_configs/*.yml write it"
    parser.add_argument("--episodes", type=int, default=None, help=f"{demo} (Pendulum 20, MountainCar 10, PointMaze 10)")
    parser.add_argument("--quality", default=None, choices=sorted(QUALITY_PRESETS), help=f"{demo} (medium, expert, expert)")
    parser.add_argument("--dataset-id", default=None, help="default: sb3-expo/<short env name>-<quality>-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=None, help="override the quality preset")
    parser.add_argument("--random-prob", type=float, default=None, help="override the quality preset")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    _, demo_quality, demo_episodes = DEMO_DATASETS[args.env]
    quality = args.quality or demo_quality
    dataset_id = args.dataset_id or default_dataset_id(args.env, quality)
    dataset = make_minari_dataset(
        args.env,
        dataset_id,
        n_episodes=demo_episodes if args.episodes is None else args.episodes,
        seed=args.seed,
        noise=args.noise,
        random_prob=args.random_prob,
        quality=quality,
        overwrite=args.overwrite,
    )
    rets = episode_returns(dataset)
    print(
        f"{dataset_id}: {dataset.total_episodes} episodes, {dataset.total_steps} steps, "
        f"mean return {rets.mean():.2f} (std {rets.std():.2f}, min {rets.min():.2f}, max {rets.max():.2f})"
    )
    return float(rets.mean())


if __name__ == "__main__":
    main()
