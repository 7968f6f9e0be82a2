"""pytest plugin: run SB3's own generic tests with EXPO in SAC's place (used by ``tests/test_sb3_suite.py``).

``stable_baselines3.SAC`` is replaced, before SB3's test modules import it, by :class:`EXPO` with the ``tiny``
preset's sizes as defaults (SB3's tests train for a few hundred steps; EXPO's authors' defaults are GPU-sized). Only
the SAC cases are kept: the parametrized cases whose model class is EXPO, and the tests that call SAC by name.
``DESELECTED`` lists the tests left out, each with the difference of the algorithm that makes it inapplicable.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import stable_baselines3
import torch as th

from sb3_expo import EXPO as _EXPO
from sb3_expo import get_preset


class EXPO(_EXPO):
    """EXPO with the tiny preset's sizes as defaults (any argument given wins), standing in for SAC."""

    def __init__(self, policy: Any, env: Any, **kwargs: Any) -> None:
        preset = get_preset("tiny")
        user_pk = dict(kwargs.pop("policy_kwargs", None) or {})
        policy_kwargs = preset.pop("policy_kwargs")
        if "net_arch" in user_pk:  # SB3's spelling: it sets the edit policy and the critics
            policy_kwargs.pop("edit_net_arch")
            policy_kwargs.pop("critic_net_arch")
        policy_kwargs.update(user_pk)
        if policy_kwargs.get("n_critics", 2) < preset["num_min_qs"]:
            preset["num_min_qs"] = policy_kwargs["n_critics"]
        super().__init__(policy, env, **{**preset, **kwargs, "policy_kwargs": policy_kwargs})


stable_baselines3.SAC = EXPO  # SB3's test modules do `from stable_baselines3 import SAC` at import time

# test node name (without the module) -> why it cannot apply to EXPO (a difference of the algorithm)
_NO_ACTOR = (
    "reads SAC's actor / critic modules (policy.actor, model.critic_target): EXPO's action is not one network's "
    "output but the on-the-fly choice among diffusion samples and their edits, scored by the critic ensemble"
)
_NO_GSDE = (
    "use_sde=True: gSDE is the state-dependent noise of a Gaussian actor; EXPO has none (diffusion sampling, edit "
    "noise and max-Q selection explore), and refuses use_sde=True with a clear error"
)
_NO_ENT_COEF = (
    "SAC's entropy coefficient of its Gaussian actor (ent_coef / log_ent_coef): EXPO's temperature belongs to the "
    "edit policy (initial_temperature, target_entropy) and is a module of the policy, saved in policy.pth"
)
DESELECTED: dict[str, str] = {
    "test_save_load_pytorch_var": _NO_ENT_COEF,
    "test_save_load_policy[False-MlpPolicy-EXPO]": _NO_ACTOR,
    "test_save_load_policy[False-CnnPolicy-EXPO]": _NO_ACTOR,
    "test_save_load_policy[True-MlpPolicy-EXPO]": _NO_GSDE,
    "test_save_load_policy[True-CnnPolicy-EXPO]": _NO_GSDE,
    "test_sac_train_with_batch_norm": _NO_ACTOR,
    "test_offpolicy_collect_rollout_batch_norm[EXPO]": _NO_ACTOR,
    "test_predict_with_dropout_batch_norm[Pendulum-v1-EXPO]": _NO_ACTOR,
    "test_sac[auto]": _NO_ENT_COEF,
    "test_sac[0.01]": _NO_ENT_COEF,
    "test_sac[auto_0.01]": _NO_ENT_COEF,
    "test_offpolicy_multi_env[EXPO]": _NO_GSDE,
}
if not th.cuda.is_available():
    # Not an algorithm difference: the test sets model.device = "cuda" by hand on a machine without CUDA; EXPO's
    # default DeviceReplayBuffer resolves the device (get_device) and reports the one it really uses, "cpu".
    DESELECTED["test_save_load_replay_buffer[EXPO]"] = "needs CUDA: sets model.device='cuda' by hand (no CUDA here)"


def _uses_sac(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    classes = [v for v in (callspec.params.values() if callspec else []) if inspect.isclass(v)]
    if classes:
        return EXPO in classes
    try:
        source = inspect.getsource(item.function)  # type: ignore[attr-defined]
    except (OSError, TypeError):
        return False
    return "SAC(" in source or "SAC.load" in source


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        name = item.nodeid.split("::", 1)[-1]
        if _uses_sac(item) and name not in DESELECTED:
            kept.append(item)
        else:
            dropped.append(item)
    items[:] = kept
    config.hook.pytest_deselected(items=dropped)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line("EXPO in SAC's place; deselected SAC cases and why:")
    for name, reason in DESELECTED.items():
        terminalreporter.write_line(f"  {name}: {reason}")
