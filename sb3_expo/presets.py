"""Named hyperparameter presets for :class:`~sb3_expo.EXPO`.

``reference`` is the authors' setting (GPU scale: ~1.5 TFLOP per env step). ``cpu`` keeps every mechanism of EXPO
(diffusion base, edit policy, 10-critic LayerNorm ensemble, OTF selection in acting and in the TD target) but shrinks
the networks, T, N and the UTD so that a run trains in minutes on 2 CPU cores. ``tiny`` is for tests.

Usage::

    from sb3_expo import EXPO
    from sb3_expo.presets import get_preset
    model = EXPO("MlpPolicy", "Pendulum-v1", **get_preset("cpu"))
"""

from __future__ import annotations

import copy
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The authors' defaults (Robomimic scripts): written out so that the preset is self-describing.
    "reference": dict(
        learning_rate=3e-4,
        batch_size=256,
        gradient_steps=20,
        n_diffusion_steps=10,
        n_action_samples=8,
        n_edit_samples=8,
        edit_scale=0.05,
        num_min_qs=2,
        learning_starts=5000,
        policy_kwargs=dict(
            base_hidden_dim=256,
            base_n_blocks=3,
            base_time_dim=128,
            edit_net_arch=[256, 256, 256],
            critic_net_arch=[256, 256, 256],
            n_critics=10,
        ),
    ),
    # Tens of ms per env step on one CPU core (measured in docs/performance.md): UTD 2 instead of 20, T=5, N=4.
    "cpu": dict(
        learning_rate=3e-4,
        batch_size=128,
        gradient_steps=2,
        n_diffusion_steps=5,
        n_action_samples=4,
        n_edit_samples=4,
        edit_scale=0.1,
        num_min_qs=2,
        learning_starts=1000,
        base_lr_decay_steps=None,
        policy_kwargs=dict(
            base_hidden_dim=64,
            base_n_blocks=2,
            base_time_dim=16,
            edit_net_arch=[64, 64],
            critic_net_arch=[128, 128],
            n_critics=10,
        ),
    ),
    # Unit tests: every mechanism, minimal cost.
    "tiny": dict(
        batch_size=16,
        gradient_steps=2,
        n_diffusion_steps=3,
        n_action_samples=2,
        n_edit_samples=2,
        edit_scale=0.1,
        num_min_qs=2,
        learning_starts=50,
        buffer_size=5000,
        base_lr_decay_steps=None,
        policy_kwargs=dict(
            base_hidden_dim=16,
            base_n_blocks=1,
            base_time_dim=8,
            edit_net_arch=[16, 16],
            critic_net_arch=[16, 16],
            n_critics=4,
        ),
    ),
}


def get_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """Return a fresh copy of a preset's keyword arguments, with ``overrides`` applied.

    ``policy_kwargs`` in ``overrides`` are merged into the preset's, not replaced.

    :param name: ``"reference"``, ``"cpu"`` or ``"tiny"``.
    :param overrides: EXPO keyword arguments that take precedence.
    :return: keyword arguments for :class:`~sb3_expo.EXPO`.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown EXPO preset {name!r}; available presets: {sorted(PRESETS)}")
    kwargs = copy.deepcopy(PRESETS[name])
    policy_kwargs = {**kwargs.pop("policy_kwargs", {}), **overrides.pop("policy_kwargs", {})}
    kwargs.update(overrides)
    kwargs["policy_kwargs"] = policy_kwargs
    return kwargs


# The constructor's value of every argument a preset may set, when the preset picked does not set it: the authors'
# (the reference preset's, plus the two arguments only the cpu / tiny presets change).
REFERENCE_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in PRESETS["reference"].items() if k != "policy_kwargs"},
    "buffer_size": 1_000_000,
    "base_lr_decay_steps": 2_000_000,
}


def device_preset(device: Any) -> str:
    """The preset ``preset="auto"`` picks: ``"reference"`` (the authors' settings) on CUDA, ``"cpu"`` otherwise.

    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` (resolved as SB3 does)
    """
    from stable_baselines3.common.utils import get_device

    return "reference" if get_device(device).type == "cuda" else "cpu"


def resolve_preset(
    preset: str, device: Any, passed: dict[str, Any], policy_kwargs: dict[str, Any] | None
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Fill the arguments the user did not pass from a preset (what ``EXPO(..., preset=...)`` does).

    :param preset: ``"auto"`` (:func:`device_preset`), or a name of :data:`PRESETS`
    :param device: the model's device argument (for ``"auto"``)
    :param passed: the user's values of :data:`REFERENCE_DEFAULTS`' arguments; the ones not passed are absent
    :param policy_kwargs: the user's ``policy_kwargs``: merged over the preset's, key by key (the user's win; an SB3
        ``net_arch`` replaces the preset's ``edit_net_arch`` / ``critic_net_arch``)
    :return: the preset's name, the value of every argument of :data:`REFERENCE_DEFAULTS`, the merged policy_kwargs
    """
    name = device_preset(device) if preset == "auto" else preset
    if name not in PRESETS:
        raise ValueError(
            f"Unknown EXPO preset {preset!r}. Fix: preset='auto' (the authors' settings on CUDA, 'cpu' otherwise), "
            f"or one of {sorted(PRESETS)}."
        )
    values = get_preset(name)
    preset_pk = values.pop("policy_kwargs")
    user_pk = dict(policy_kwargs or {})
    if "net_arch" in user_pk:
        preset_pk.pop("edit_net_arch", None)
        preset_pk.pop("critic_net_arch", None)
    chosen = {key: passed.get(key, values.get(key, default)) for key, default in REFERENCE_DEFAULTS.items()}
    return name, chosen, {**preset_pk, **user_pk}
