"""RL Zoo integration of EXPO.

``python -m rl_zoo3.train --algo expo`` (RL Zoo's own CLI, through the import hook sb3-expo installs) and
``python -m sb3_expo.train --algo expo`` run the same code:

* :mod:`~sb3_expo.zoo.registration`: EXPO in the zoo's tables (``ALGOS``, the Optuna sampler) and the optional env
  packages; the hook of ``rl_zoo3.train``;
* :mod:`~sb3_expo.zoo.validation`: every key of an entry checked before anything is built (:class:`ZooConfigError`);
* :mod:`~sb3_expo.zoo.datasets`: dotted buffer classes, expanded paths, demo datasets written on demand;
* :mod:`~sb3_expo.zoo.pretraining`: ``pretrain_steps`` as :class:`PretrainCallback`, pretrained once per study;
* :mod:`~sb3_expo.zoo.tuning`: the Optuna search space, bounded by the device's preset;
* :mod:`~sb3_expo.zoo.experiment_manager`: the zoo's ``ExperimentManager`` with all of the above;
* :mod:`~sb3_expo.zoo.inference`: loading an agent to replay it without its dataset.

EXPO's extra YAML keys (removed before the zoo passes the rest to the model constructor):

``pretrain_steps: 2000``
    offline-to-online: pretrain the base policy on the replay buffer's offline part for this many steps before
    online training (:meth:`EXPO.pretrain <sb3_expo.EXPO.pretrain>`), through :class:`PretrainCallback`.
``pretrain_kwargs: {train_critic: false, train_edit: false, gradient_steps: 1, batch_size: 256}``
    extra arguments of :class:`PretrainCallback` / ``EXPO.pretrain``.
``make_dataset: {n_episodes: 20, quality: medium, seed: 0}``
    how to write a missing local demo dataset whose id starts with ``sb3-expo/``.
``check_dataset_env: true``
    fail when the Minari dataset was recorded on another env (compared by name, ignoring the version).
"""

from __future__ import annotations

from typing import Any

from sb3_expo.zoo.datasets import DEMO_DATASET_PREFIX, prepare_minari_dataset, resolve_replay_buffer
from sb3_expo.zoo.inference import inference_class
from sb3_expo.zoo.pretraining import PretrainCallback
from sb3_expo.zoo.registration import register, register_envs, register_with_rl_zoo
from sb3_expo.zoo.tuning import convert_expo_params, sample_expo_params, search_space
from sb3_expo.zoo.validation import (
    EXPO_ZOO_KEYS,
    ZOO_COMMAND_LINE_ARGS,
    ZOO_KEYS,
    ZooConfigError,
    check_env_id,
    load_zoo_yaml,
    validate_hyperparams,
    validate_yaml,
)

__all__ = [
    "DEMO_DATASET_PREFIX",
    "EXPOExperimentManager",
    "EXPO_ZOO_KEYS",
    "PretrainCallback",
    "ZOO_COMMAND_LINE_ARGS",
    "ZOO_KEYS",
    "ZooConfigError",
    "check_env_id",
    "convert_expo_params",
    "inference_class",
    "load_zoo_yaml",
    "prepare_hyperparams",
    "prepare_minari_dataset",
    "register",
    "register_envs",
    "register_with_rl_zoo",
    "resolve_replay_buffer",
    "sample_expo_params",
    "search_space",
    "validate_hyperparams",
    "validate_yaml",
]


def __getattr__(name: str) -> Any:
    # Lazy: importing sb3_expo.zoo must not import rl_zoo3 (optuna, huggingface_sb3) until it is needed.
    if name in ("EXPOExperimentManager", "prepare_hyperparams"):
        from sb3_expo.zoo import experiment_manager

        return getattr(experiment_manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
