"""Checks of a zoo entry before anything is built: every key against the algorithm's constructor (and its policy's),
EXPO's value rules, and registered env ids. Each failure is one :class:`ZooConfigError` that says how to fix it."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Collection, Mapping
from typing import Any, Optional

import gymnasium as gym

from sb3_expo.config import DiffusionConfig, OTFConfig
from sb3_expo.expo import EXPO

#: EXPO's YAML keys that are not constructor arguments (see the module docstring).
EXPO_ZOO_KEYS = ("pretrain_steps", "pretrain_kwargs", "make_dataset", "check_dataset_env")

#: Keys the zoo itself consumes (never passed to a constructor).
ZOO_KEYS = (
    "n_timesteps",
    "n_envs",
    "normalize",
    "env_wrapper",
    "vec_env_wrapper",
    "callback",
    "frame_stack",
    "env_kwargs",
    "monitor_kwargs",
    "noise_type",
    "noise_std",
    "policy",
)

#: Constructor arguments the zoo sets from its command line: a YAML value would clash with them.
ZOO_COMMAND_LINE_ARGS = {
    "env": "--env",
    "seed": "--seed",
    "verbose": "--verbose",
    "device": "--device",
    "tensorboard_log": "-tb/--tensorboard-log",
}

DEMO_DATASET_PREFIX = "sb3-expo/"
DEFAULT_DEMO_EPISODES = 20


class ZooConfigError(ValueError):
    """A zoo configuration (YAML entry, ``-params``, env id, dataset) is invalid; the message says how to fix it."""


def _init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Named ``__init__`` parameters of ``cls``, following ``**kwargs`` up the MRO (e.g. ``MultiInputPolicy``)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__:
            continue
        sig = inspect.signature(klass.__dict__["__init__"])
        has_var_kw = False
        for name, p in sig.parameters.items():
            if name == "self" or p.kind == p.VAR_POSITIONAL:
                continue
            if p.kind == p.VAR_KEYWORD:
                has_var_kw = True
                continue
            params.setdefault(name, p)
        if not has_var_kw:
            break
    return params


def _suggest(key: str, candidates: Any) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _resolve_policy_class(algo_cls: type, policy: Any) -> Optional[type]:
    if isinstance(policy, type):
        return policy
    if isinstance(policy, str):
        aliases = getattr(algo_cls, "policy_aliases", {})
        if policy in aliases:
            return aliases[policy]
        if "." in policy:
            try:
                return _import_dotted(policy)
            except (ImportError, AttributeError):
                return None
    return None


def _import_dotted(path: str) -> Any:
    module, _, name = path.rpartition(".")
    if not module:
        raise ImportError(f"'{path}' is not a dotted path (module.Name)")
    return getattr(importlib.import_module(module), name)


def validate_hyperparams(
    algo: str, hyperparams: Mapping[str, Any], where: str = "the config", overrides: Collection[str] = ()
) -> None:
    """Check the keys of one zoo entry against the algorithm's constructor (``inspect.signature``) and, for EXPO,
    its policy's ``policy_kwargs`` and the values of the sampling settings. Raises one clear error, before any env
    or network is built.

    :param algo: zoo algorithm name (``"expo"``, ``"sac"``, ...)
    :param hyperparams: the entry, after EXPO's extra keys were removed
    :param where: what to call the entry in messages (e.g. ``"zoo_configs/expo.yml [Pendulum-v1]"``)
    :param overrides: keys whose value came from the command line (``-params``): their errors name ``-params``
    :raises ZooConfigError: unknown key (with the closest valid one), missing ``policy``, clashing key, bad value
    """
    from rl_zoo3.utils import ALGOS

    def at(*keys: str) -> str:
        """Where the value of ``keys`` came from: ``-params`` or the entry."""
        return "-params" if any(k in overrides for k in keys) else where

    if algo not in ALGOS:
        raise ZooConfigError(f"Unknown algorithm '{algo}'. Available: {sorted(ALGOS)}.")
    algo_cls = ALGOS[algo]
    ctor = _init_parameters(algo_cls)
    ctor.pop("_init_setup_model", None)
    for key, flag in ZOO_COMMAND_LINE_ARGS.items():
        if key in hyperparams:
            raise ZooConfigError(f"{at(key)}: '{key}' is set by the zoo from the command line ({flag}); remove it.")
    valid = (set(ctor) - set(ZOO_COMMAND_LINE_ARGS)) | set(ZOO_KEYS) | set(EXPO_ZOO_KEYS)
    for key in hyperparams:
        if key not in valid:
            raise ZooConfigError(
                f"{at(key)}: unknown hyperparameter '{key}' for {algo_cls.__name__}.{_suggest(key, valid)} "
                f"Valid keys: the {algo_cls.__name__} constructor arguments (see docs/arguments.md) and the zoo keys "
                f"{', '.join(ZOO_KEYS + EXPO_ZOO_KEYS)}."
            )
    if "policy" not in hyperparams:
        raise ZooConfigError(f"{where}: 'policy' is missing (e.g. policy: MlpPolicy).")
    if "n_timesteps" not in hyperparams:
        raise ZooConfigError(f"{where}: 'n_timesteps' is missing (the zoo needs it; -n overrides it).")
    if algo_cls is not EXPO and not issubclass(algo_cls, EXPO):
        for key in ("pretrain_steps", "pretrain_kwargs"):
            if key in hyperparams:
                raise ZooConfigError(f"{at(key)}: '{key}' is EXPO-only ({algo_cls.__name__} has no pretrain()); remove it.")
    if issubclass(algo_cls, EXPO) and ("noise_type" in hyperparams or "noise_std" in hyperparams):
        raise ZooConfigError(f"{at('noise_type', 'noise_std')}: EXPO takes no action noise (its exploration is the OTF policy); remove noise_type/noise_std.")

    policy_kwargs = hyperparams.get("policy_kwargs")
    if isinstance(policy_kwargs, str):
        try:
            policy_kwargs = eval(policy_kwargs, {"dict": dict, "nn": importlib.import_module("torch.nn")})
        except Exception as e:  # the zoo evals it too; here only the keys matter
            raise ZooConfigError(f"{at('policy_kwargs')}: policy_kwargs string {policy_kwargs!r} does not evaluate ({e}).") from e
    policy_cls = _resolve_policy_class(algo_cls, hyperparams["policy"])
    if policy_cls is None and isinstance(hyperparams["policy"], str) and "." not in hyperparams["policy"]:
        aliases = sorted(getattr(algo_cls, "policy_aliases", {}))
        raise ZooConfigError(
            f"{at('policy')}: unknown policy '{hyperparams['policy']}' for {algo_cls.__name__}.{_suggest(hyperparams['policy'], aliases)} "
            f"Available: {aliases}."
        )
    if isinstance(policy_kwargs, Mapping) and policy_cls is not None:
        policy_params = _init_parameters(policy_cls)
        internal = {"observation_space", "action_space", "lr_schedule"}
        if issubclass(algo_cls, EXPO):
            # built / overwritten by EXPO from its flat arguments: a policy_kwargs value would be silently replaced
            internal |= {"diffusion", "otf", "base_learning_rate", "base_weight_decay", "temperature_learning_rate", "initial_temperature", "backend"}
        allowed = set(policy_params) - internal
        for key in policy_kwargs:
            if key not in allowed:
                hint = ""
                if key in _init_parameters(algo_cls):
                    hint = f" '{key}' is an {algo_cls.__name__} argument: put it at the top level of the entry, not in policy_kwargs."
                raise ZooConfigError(
                    f"{at('policy_kwargs')}: unknown policy_kwargs key '{key}' for {policy_cls.__name__}.{hint or _suggest(key, allowed)}"
                )
        if issubclass(algo_cls, EXPO):
            n_critics = policy_kwargs.get("n_critics", policy_params["n_critics"].default)
            if hyperparams.get("num_min_qs", OTFConfig.num_min_qs) > n_critics:
                raise ZooConfigError(f"{at('num_min_qs', 'policy_kwargs')}: num_min_qs={hyperparams.get('num_min_qs')} exceeds n_critics={n_critics}.")
    if issubclass(algo_cls, EXPO):
        config_keys = [k for k in (*OTFConfig.__dataclass_fields__, *DiffusionConfig.__dataclass_fields__) if k in hyperparams]
        try:
            OTFConfig(**{k: hyperparams[k] for k in OTFConfig.__dataclass_fields__ if k in hyperparams})
            DiffusionConfig(**{k: hyperparams[k] for k in DiffusionConfig.__dataclass_fields__ if k in hyperparams})
        except (TypeError, ValueError) as e:
            raise ZooConfigError(f"{at(*config_keys)}: {e}") from e
        gradient_steps = hyperparams.get("gradient_steps", 1)
        if isinstance(gradient_steps, int) and (gradient_steps == 0 or gradient_steps < -1):
            raise ZooConfigError(f"{at('gradient_steps')}: gradient_steps must be >= 1 (or -1), got {gradient_steps}.")
    pretrain_steps = hyperparams.get("pretrain_steps")
    if pretrain_steps is not None:
        if not isinstance(pretrain_steps, int) or pretrain_steps < 0:
            raise ZooConfigError(f"{at('pretrain_steps')}: pretrain_steps must be a non-negative integer, got {pretrain_steps!r}.")
        rb = hyperparams.get("replay_buffer_class")
        if pretrain_steps > 0 and rb is None:
            raise ZooConfigError(
                f"{at('pretrain_steps')}: pretrain_steps={pretrain_steps} needs offline data: set replay_buffer_class "
                "(e.g. sb3_expo.wrappers.MinariReplayBuffer) and replay_buffer_kwargs: {dataset_id: ...}."
            )
    pretrain_kwargs = hyperparams.get("pretrain_kwargs") or {}
    if not isinstance(pretrain_kwargs, Mapping):
        raise ZooConfigError(f"{at('pretrain_kwargs')}: pretrain_kwargs must be a mapping, got {pretrain_kwargs!r}.")
    from sb3_expo.zoo.pretraining import PretrainCallback

    cb_params = set(_init_parameters(PretrainCallback)) - {"n_steps"}
    for key in pretrain_kwargs:
        if key not in cb_params:
            raise ZooConfigError(f"{at('pretrain_kwargs')}: unknown pretrain_kwargs key '{key}'.{_suggest(key, cb_params)} Valid: {sorted(cb_params)}.")


def load_zoo_yaml(path: str) -> dict[str, dict[str, Any]]:
    """Read a zoo YAML file (anchors resolved) and return ``{env_id: entry}`` with hidden keys (``.name``) dropped.

    :param path: the YAML file
    :return: the entries, by env id
    """
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ZooConfigError(f"{path}: expected a mapping of env ids to hyperparameters, got {type(data).__name__}.")
    return {k: v for k, v in data.items() if not str(k).startswith(".")}


def validate_yaml(path: str, algo: str) -> dict[str, dict[str, Any]]:
    """Validate the keys of every entry of a zoo YAML file (no env or dataset is touched).

    :param path: the YAML file
    :param algo: the zoo algorithm the file is for
    :return: the entries
    :raises ZooConfigError: on the first bad entry
    """
    entries = load_zoo_yaml(path)
    for env_id, entry in entries.items():
        if not isinstance(entry, Mapping):
            raise ZooConfigError(f"{path} [{env_id}]: expected a mapping, got {entry!r}.")
        validate_hyperparams(algo, entry, where=f"{path} [{env_id}]")
    return entries


def check_env_id(env_id: str) -> None:
    """Raise a one-line :class:`ZooConfigError` (with the closest registered id) if ``env_id`` is not registered.

    :param env_id: a Gymnasium id
    """
    from sb3_expo.zoo.registration import register_envs

    register_envs()
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ZooConfigError(
        f"Unknown environment id '{env_id}'.{hint} (Ids of other packages need --gym-packages <module>.)"
    )
