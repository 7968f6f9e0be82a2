"""Optuna search space of EXPO for ``-optimize``, bounded by the preset of the device the trials run on.

On a CPU the cost knobs never exceed twice the ``cpu`` preset's (UTD at most 4, N at most 4, batch at most 128);
on CUDA they reach the authors' settings (UTD 20, N 8, batch 256). The other knobs have one range everywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Optional

from sb3_expo.presets import PRESETS, device_preset

#: The device whose preset bounds the search space (the zoo's ``--device``; see :func:`trials_on`).
_trial_device: list[Any] = ["auto"]


@contextlib.contextmanager
def trials_on(device: Any) -> Iterator[None]:
    """Sample for ``device`` inside this block (the experiment manager wraps each trial in it)."""
    _trial_device.append(device)
    try:
        yield
    finally:
        _trial_device.pop()


def search_space(device: Any = "auto", preset: Optional[str] = None) -> dict[str, list]:
    """The choices of the cost knobs for ``device``: at most twice the device preset's UTD, at most its N and its
    batch size.

    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``, ... (resolved as SB3 does: ``"cuda"`` without a GPU is the CPU)
    :param preset: a preset name instead of the device's (:data:`~sb3_expo.presets.PRESETS`)
    :return: ``{"gradient_steps": [...], "n_action_samples": [...], "batch_size_pow": [...]}``
    """
    preset = PRESETS[preset or device_preset(device)]
    return {
        "gradient_steps": [u for u in (1, 2, 4, 8, 20) if u <= 2 * preset["gradient_steps"]],
        "n_action_samples": [n for n in (2, 4, 8) if n <= preset["n_action_samples"]],
        "batch_size_pow": [p for p in (6, 7, 8) if 2**p <= preset["batch_size"]],
    }


def sample_expo_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for EXPO's key knobs (``-optimize``). Network sizes are left to the YAML entry.

    Search space: critic/edit learning rate and base learning rate (log-uniform 1e-4..1e-3), ``edit_scale`` (beta,
    0.05..0.7, the paper's range), ``num_min_qs`` in {1, 2}, ``gamma`` in {0.98, 0.99, 0.995}, ``tau`` in
    {0.005, 0.01, 0.02}, and the cost knobs of :func:`search_space`: ``gradient_steps`` (UTD), ``n_action_samples``
    N (every base sample is also edited: ``n_edit_samples = N``) and ``batch_size``.

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of envs (unused)
    :param additional_args: the zoo's extra arguments (unused)
    :return: EXPO keyword arguments
    """
    space = search_space(_trial_device[-1])
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True),
        "base_learning_rate": trial.suggest_float("base_learning_rate", 1e-4, 1e-3, log=True),
        "edit_scale": trial.suggest_categorical("edit_scale", [0.05, 0.1, 0.2, 0.4, 0.7]),
        "n_action_samples": trial.suggest_categorical("n_action_samples", space["n_action_samples"]),
        "gradient_steps": trial.suggest_categorical("gradient_steps", space["gradient_steps"]),
        "batch_size_pow": trial.suggest_categorical("batch_size_pow", space["batch_size_pow"]),
        "num_min_qs": trial.suggest_categorical("num_min_qs", [1, 2]),
        "gamma": trial.suggest_categorical("gamma", [0.98, 0.99, 0.995]),
        "tau": trial.suggest_categorical("tau", [0.005, 0.01, 0.02]),
    }
    converted = convert_expo_params(params)
    trial.set_user_attr("batch_size", converted["batch_size"])
    return converted


def convert_expo_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Turn sampled Optuna values into EXPO arguments (also used by the zoo to reload a trial: ``--trial-id``).

    :param params: the sampled values (``trial.params``)
    :return: EXPO keyword arguments
    """
    hyperparams = dict(params)
    if "batch_size_pow" in hyperparams:
        hyperparams["batch_size"] = 2 ** int(hyperparams.pop("batch_size_pow"))
    if "n_action_samples" in hyperparams and "n_edit_samples" not in hyperparams:
        hyperparams["n_edit_samples"] = hyperparams["n_action_samples"]  # 2N candidates, as in the paper
    return hyperparams
