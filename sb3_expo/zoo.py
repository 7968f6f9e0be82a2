"""RL Zoo integration of EXPO: registration, an Optuna sampler, YAML validation and EXPO's extra YAML keys.

RL Zoo (``rl_zoo3``) has no plugin API. :func:`register` adds EXPO to its tables (``ALGOS["expo"]``,
``HYPERPARAMS_SAMPLER["expo"]``, ``HYPERPARAMS_CONVERTER["expo"]``) and registers the optional env packages
(gymnasium-robotics, the robomimic envs of :mod:`sb3_expo.envs`). :class:`EXPOExperimentManager` is the zoo's
``ExperimentManager`` plus EXPO's extra YAML keys and early validation; ``python -m sb3_expo.train`` uses it.

EXPO's extra YAML keys (removed before the zoo passes the rest to the model constructor):

``pretrain_steps: 2000``
    offline-to-online: pretrain the base policy on the replay buffer's offline part for this many steps before
    online training (:meth:`EXPO.pretrain <sb3_expo.EXPO.pretrain>`). Implemented as a :class:`PretrainCallback`
    appended to the ``callback`` list, so it also runs in every ``-optimize`` trial, and it is skipped when a
    resumed model (``-i``) already has pretrained/trained base updates.
``pretrain_kwargs: {train_critic: false, train_edit: false, gradient_steps: 1, batch_size: 256}``
    extra arguments of ``EXPO.pretrain``.
``make_dataset: {n_episodes: 20, quality: medium, seed: 0}``
    how to write a missing local demo dataset whose id starts with ``sb3-expo/`` (with
    :func:`sb3_expo.datasets.make_minari.make_minari_dataset`). Without this key the dataset is written with the
    quality named in the id (``sb3-expo/pendulum-medium-v0`` -> ``medium``) and 20 episodes.
``check_dataset_env: true``
    fail when the Minari dataset was recorded on another env (compared by name, ignoring the version).

``replay_buffer_class`` may be a dotted path (``sb3_expo.wrappers.MinariReplayBuffer``); ``~`` and ``$VARS`` in
``replay_buffer_kwargs.path`` are expanded.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import importlib
import inspect
import io
import os
import re
from collections.abc import Mapping
from typing import Any, Optional

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback

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


# ----------------------------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------------------------


def register_envs() -> list[str]:
    """Import the optional env packages so that their ids are registered (each is skipped if not installed).

    :return: the packages that were imported
    """
    imported = []
    try:
        # gymnasium-robotics prints a notice about the Adroit *Dense-v1 rewards on import (farama_notifications);
        # it concerns the dense variants' reproducibility across versions, not this package: keep the output clean.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        imported.append("gymnasium_robotics")
    except ImportError:
        pass
    try:
        importlib.import_module("sb3_expo.envs")  # robomimic tasks: sb3_expo/RobomimicLift-v0, ... (lazy robosuite)
        imported.append("sb3_expo.envs")
    except ImportError:
        pass
    return imported


def register() -> None:
    """Register EXPO with RL Zoo (idempotent): ``ALGOS["expo"]``, its Optuna sampler and converter, and the envs."""
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    ALGOS["expo"] = EXPO
    HYPERPARAMS_SAMPLER["expo"] = sample_expo_params
    HYPERPARAMS_CONVERTER["expo"] = convert_expo_params
    register_envs()


# ----------------------------------------------------------------------------------------------------------------
# Optuna
# ----------------------------------------------------------------------------------------------------------------


def sample_expo_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for EXPO's key knobs (``-optimize``). Network sizes are left to the YAML entry.

    Search space: critic/edit learning rate and base learning rate (log-uniform 1e-4..1e-3), ``edit_scale`` (beta,
    0.05..0.7, the paper's range), ``n_action_samples`` N in {2, 4, 8} (every base sample is also edited:
    ``n_edit_samples = N``), ``gradient_steps`` (UTD) in {1, 2, 4, 8, 20}, ``batch_size`` in {64, 128, 256},
    ``num_min_qs`` in {1, 2}, ``gamma`` in {0.98, 0.99, 0.995} and ``tau`` in {0.005, 0.01, 0.02}.

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of envs (unused)
    :param additional_args: the zoo's extra arguments (unused)
    :return: EXPO keyword arguments
    """
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True),
        "base_learning_rate": trial.suggest_float("base_learning_rate", 1e-4, 1e-3, log=True),
        "edit_scale": trial.suggest_categorical("edit_scale", [0.05, 0.1, 0.2, 0.4, 0.7]),
        "n_action_samples": trial.suggest_categorical("n_action_samples", [2, 4, 8]),
        "gradient_steps": trial.suggest_categorical("gradient_steps", [1, 2, 4, 8, 20]),
        "batch_size_pow": trial.suggest_int("batch_size_pow", 6, 8),
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


# ----------------------------------------------------------------------------------------------------------------
# offline-to-online: pretraining as a callback
# ----------------------------------------------------------------------------------------------------------------


class PretrainCallback(BaseCallback):
    """Run :meth:`EXPO.pretrain <sb3_expo.EXPO.pretrain>` once, when training starts (offline-to-online).

    Configured by the YAML key ``pretrain_steps`` (the launcher adds this callback), or directly::

        callback:
          - sb3_expo.zoo.PretrainCallback: {n_steps: 2000}

    It does nothing when the model already has base-policy updates (a run resumed with ``-i``), unless
    ``force=True``.

    :param n_steps: pretraining steps
    :param train_critic: also pretrain the critic (default False: the paper pretrains only the base policy)
    :param train_edit: also pretrain the edit policy (implies ``train_critic``)
    :param gradient_steps: critic updates per pretraining step (with ``train_critic``)
    :param batch_size: minibatch size (default: the model's)
    :param progress_bar: show a progress bar
    :param log_interval: dump the logs every this many steps
    :param force: pretrain even if the model already has base-policy updates
    :param verbose: 1 prints a line before and after pretraining
    """

    def __init__(
        self,
        n_steps: int,
        train_critic: bool = False,
        train_edit: bool = False,
        gradient_steps: int = 1,
        batch_size: Optional[int] = None,
        progress_bar: bool = True,
        log_interval: int = 1000,
        force: bool = False,
        verbose: int = 1,
    ):
        super().__init__(verbose)
        self.n_steps = int(n_steps)
        self.pretrain_kwargs = dict(
            train_critic=train_critic,
            train_edit=train_edit,
            gradient_steps=gradient_steps,
            batch_size=batch_size,
            progress_bar=progress_bar,
            log_interval=log_interval,
        )
        self.force = force
        self.done = False

    def _on_training_start(self) -> None:
        if self.done or self.n_steps <= 0:
            return
        model = self.model
        if not hasattr(model, "pretrain"):
            raise ZooConfigError(
                f"pretrain_steps needs EXPO (it calls model.pretrain), but the model is {type(model).__name__}. "
                "Fix: remove pretrain_steps from this entry."
            )
        if getattr(model, "_n_base_updates", 0) > 0 and not self.force:
            if self.verbose:
                print(f"PretrainCallback: the model already has {model._n_base_updates} base updates; not pretraining again.")
            self.done = True
            return
        if self.verbose:
            print(f"Pretraining the base policy for {self.n_steps} steps on the offline data")
        model.pretrain(self.n_steps, **self.pretrain_kwargs)
        self.done = True

    def _on_step(self) -> bool:
        return True


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------


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


def validate_hyperparams(algo: str, hyperparams: Mapping[str, Any], where: str = "the config") -> None:
    """Check the keys of one zoo entry against the algorithm's constructor (``inspect.signature``) and, for EXPO,
    its policy's ``policy_kwargs`` and the values of the sampling settings. Raises one clear error, before any env
    or network is built.

    :param algo: zoo algorithm name (``"expo"``, ``"sac"``, ...)
    :param hyperparams: the entry, after EXPO's extra keys were removed
    :param where: what to call the entry in messages (e.g. ``"zoo_configs/expo.yml [Pendulum-v1]"``)
    :raises ZooConfigError: unknown key (with the closest valid one), missing ``policy``, clashing key, bad value
    """
    from rl_zoo3.utils import ALGOS

    if algo not in ALGOS:
        raise ZooConfigError(f"Unknown algorithm '{algo}'. Available: {sorted(ALGOS)}.")
    algo_cls = ALGOS[algo]
    ctor = _init_parameters(algo_cls)
    ctor.pop("_init_setup_model", None)
    for key, flag in ZOO_COMMAND_LINE_ARGS.items():
        if key in hyperparams:
            raise ZooConfigError(f"{where}: '{key}' is set by the zoo from the command line ({flag}); remove it from the YAML.")
    valid = (set(ctor) - set(ZOO_COMMAND_LINE_ARGS)) | set(ZOO_KEYS) | set(EXPO_ZOO_KEYS)
    for key in hyperparams:
        if key not in valid:
            raise ZooConfigError(
                f"{where}: unknown hyperparameter '{key}' for {algo_cls.__name__}.{_suggest(key, valid)} "
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
                raise ZooConfigError(f"{where}: '{key}' is EXPO-only ({algo_cls.__name__} has no pretrain()); remove it.")
    if issubclass(algo_cls, EXPO) and ("noise_type" in hyperparams or "noise_std" in hyperparams):
        raise ZooConfigError(f"{where}: EXPO takes no action noise (its exploration is the OTF policy); remove noise_type/noise_std.")

    policy_kwargs = hyperparams.get("policy_kwargs")
    if isinstance(policy_kwargs, str):
        try:
            policy_kwargs = eval(policy_kwargs, {"dict": dict, "nn": importlib.import_module("torch.nn")})
        except Exception as e:  # the zoo evals it too; here only the keys matter
            raise ZooConfigError(f"{where}: policy_kwargs string {policy_kwargs!r} does not evaluate ({e}).") from e
    policy_cls = _resolve_policy_class(algo_cls, hyperparams["policy"])
    if policy_cls is None and isinstance(hyperparams["policy"], str) and "." not in hyperparams["policy"]:
        aliases = sorted(getattr(algo_cls, "policy_aliases", {}))
        raise ZooConfigError(
            f"{where}: unknown policy '{hyperparams['policy']}' for {algo_cls.__name__}.{_suggest(hyperparams['policy'], aliases)} "
            f"Available: {aliases}."
        )
    if isinstance(policy_kwargs, Mapping) and policy_cls is not None:
        policy_params = _init_parameters(policy_cls)
        internal = {"observation_space", "action_space", "lr_schedule"}
        if issubclass(algo_cls, EXPO):
            # built / overwritten by EXPO from its flat arguments: a policy_kwargs value would be silently replaced
            internal |= {"diffusion", "otf", "base_learning_rate", "base_weight_decay", "temperature_learning_rate", "initial_temperature"}
        allowed = set(policy_params) - internal
        for key in policy_kwargs:
            if key not in allowed:
                hint = ""
                if key in _init_parameters(algo_cls):
                    hint = f" '{key}' is an {algo_cls.__name__} argument: put it at the top level of the entry, not in policy_kwargs."
                raise ZooConfigError(
                    f"{where}: unknown policy_kwargs key '{key}' for {policy_cls.__name__}.{hint or _suggest(key, allowed)}"
                )
        if issubclass(algo_cls, EXPO):
            n_critics = policy_kwargs.get("n_critics", policy_params["n_critics"].default)
            if hyperparams.get("num_min_qs", OTFConfig.num_min_qs) > n_critics:
                raise ZooConfigError(f"{where}: num_min_qs={hyperparams.get('num_min_qs')} exceeds n_critics={n_critics}.")
    if issubclass(algo_cls, EXPO):
        try:
            OTFConfig(**{k: hyperparams[k] for k in OTFConfig.__dataclass_fields__ if k in hyperparams})
            DiffusionConfig(**{k: hyperparams[k] for k in DiffusionConfig.__dataclass_fields__ if k in hyperparams})
        except (TypeError, ValueError) as e:
            raise ZooConfigError(f"{where}: {e}") from e
        gradient_steps = hyperparams.get("gradient_steps", 1)
        if isinstance(gradient_steps, int) and (gradient_steps == 0 or gradient_steps < -1):
            raise ZooConfigError(f"{where}: gradient_steps must be >= 1 (or -1), got {gradient_steps}.")
    pretrain_steps = hyperparams.get("pretrain_steps")
    if pretrain_steps is not None:
        if not isinstance(pretrain_steps, int) or pretrain_steps < 0:
            raise ZooConfigError(f"{where}: pretrain_steps must be a non-negative integer, got {pretrain_steps!r}.")
        rb = hyperparams.get("replay_buffer_class")
        if pretrain_steps > 0 and rb is None:
            raise ZooConfigError(
                f"{where}: pretrain_steps={pretrain_steps} needs offline data: set replay_buffer_class "
                "(e.g. sb3_expo.wrappers.MinariReplayBuffer) and replay_buffer_kwargs: {dataset_id: ...}."
            )
    pretrain_kwargs = hyperparams.get("pretrain_kwargs") or {}
    if not isinstance(pretrain_kwargs, Mapping):
        raise ZooConfigError(f"{where}: pretrain_kwargs must be a mapping, got {pretrain_kwargs!r}.")
    cb_params = set(_init_parameters(PretrainCallback)) - {"n_steps"}
    for key in pretrain_kwargs:
        if key not in cb_params:
            raise ZooConfigError(f"{where}: unknown pretrain_kwargs key '{key}'.{_suggest(key, cb_params)} Valid: {sorted(cb_params)}.")


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
    register_envs()
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ZooConfigError(
        f"Unknown environment id '{env_id}'.{hint} (Ids of other packages need --gym-packages <module>.)"
    )


# ----------------------------------------------------------------------------------------------------------------
# preparing an entry: EXPO keys, dotted classes, datasets
# ----------------------------------------------------------------------------------------------------------------


def resolve_replay_buffer(hyperparams: dict[str, Any], where: str = "the config") -> None:
    """In place: import a dotted ``replay_buffer_class`` path, eval a ``replay_buffer_kwargs`` string, expand
    ``~``/``$VARS`` in its ``path``.

    :param hyperparams: one entry
    :param where: name of the entry in messages
    """
    rb = hyperparams.get("replay_buffer_class")
    if isinstance(rb, str) and "." in rb:
        try:
            hyperparams["replay_buffer_class"] = _import_dotted(rb)
        except (ImportError, AttributeError) as e:
            raise ZooConfigError(f"{where}: replay_buffer_class '{rb}' cannot be imported ({e}).") from e
    kwargs = hyperparams.get("replay_buffer_kwargs")
    if isinstance(kwargs, str):
        hyperparams["replay_buffer_kwargs"] = kwargs = eval(kwargs)
    if isinstance(kwargs, Mapping) and isinstance(kwargs.get("path"), str):
        path = os.path.expanduser(os.path.expandvars(kwargs["path"]))
        unset = re.findall(r"\$\{?(\w+)", path)
        if unset:
            raise ZooConfigError(
                f"{where}: replay_buffer_kwargs.path '{kwargs['path']}' uses the unset environment variable(s) "
                f"{', '.join(unset)}. Fix: export {unset[0]}=<folder with the data> or pass the path with "
                "-params \"replay_buffer_kwargs:dict(path='...', ...)\"."
            )
        hyperparams["replay_buffer_kwargs"] = {**kwargs, "path": path}


def prepare_minari_dataset(
    dataset_id: str,
    env_id: str,
    make_kwargs: Optional[Mapping[str, Any]] = None,
    check_env: bool = True,
    verbose: int = 1,
) -> None:
    """Make sure a Minari dataset is local and recorded on ``env_id``; write ``sb3-expo/`` demo datasets on demand.

    :param dataset_id: the Minari id
    :param env_id: the env the agent trains on
    :param make_kwargs: overrides for :func:`~sb3_expo.datasets.make_minari.make_minari_dataset`
    :param check_env: compare the dataset's env name with ``env_id`` (ignoring the version)
    :param verbose: print when a dataset is written
    :raises ZooConfigError: the dataset is missing (and cannot be written here) or belongs to another env
    """
    from sb3_expo.wrappers.offline_dataset import minari_datasets_root

    root = minari_datasets_root()
    local = os.path.isdir(os.path.join(root, dataset_id, "data"))
    if not local:
        if dataset_id.startswith(DEMO_DATASET_PREFIX):
            from sb3_expo.datasets.controllers import CONTROLLERS, QUALITY_PRESETS
            from sb3_expo.datasets.make_minari import make_minari_dataset

            kwargs = dict(make_kwargs or {})
            if "quality" not in kwargs:
                name = dataset_id[len(DEMO_DATASET_PREFIX) :].rsplit("-v", 1)[0]
                guess = name.rsplit("-", 1)[-1]
                kwargs["quality"] = guess if guess in QUALITY_PRESETS else "medium"
            kwargs.setdefault("n_episodes", DEFAULT_DEMO_EPISODES)
            if env_id not in CONTROLLERS:
                raise ZooConfigError(
                    f"Minari dataset '{dataset_id}' is not in {root} and there is no scripted controller to write it "
                    f"for {env_id} (controllers: {sorted(CONTROLLERS)}). Fix: create it with make_minari_dataset(..., "
                    "controller=...) or point MINARI_DATASETS_PATH at a folder that has it."
                )
            if verbose:
                print(f"Writing the demo dataset {dataset_id} ({kwargs}) under {root}")
            make_minari_dataset(env_id, dataset_id, verbose=verbose, **kwargs)
        else:
            raise ZooConfigError(
                f"Minari dataset '{dataset_id}' is not available locally (looked in {os.path.join(root, dataset_id)}). "
                f"Fix: `minari download {dataset_id}` (needs network) or set MINARI_DATASETS_PATH to a folder that has "
                "it; demo datasets: python -m sb3_expo.datasets.make_minari --env Pendulum-v1 --quality medium."
            )
    if check_env:
        import minari

        spec = minari.load_dataset(dataset_id).spec.env_spec
        if spec is not None and _env_name(spec.id) != _env_name(env_id):
            raise ZooConfigError(
                f"Minari dataset '{dataset_id}' was recorded on {spec.id}, but the env is {env_id}. Fix: use a dataset "
                f"of {env_id} (or the env {spec.id}); set check_dataset_env: false if the envs really are the same task."
            )


def _env_name(env_id: str) -> str:
    """Env id without namespace-independent version suffix: ``Hopper-v5`` -> ``Hopper``."""
    return re.sub(r"-v\d+$", "", env_id)


def prepare_hyperparams(
    algo: str, env_id: str, hyperparams: dict[str, Any], where: str = "the config", verbose: int = 1
) -> dict[str, Any]:
    """Validate one entry, make its dataset available and turn EXPO's extra keys into zoo-native ones.

    ``pretrain_steps`` / ``pretrain_kwargs`` become a :class:`PretrainCallback` entry appended to ``callback``;
    ``make_dataset`` / ``check_dataset_env`` are consumed here. The returned dict is what the zoo then processes.

    :param algo: zoo algorithm name
    :param env_id: the env id
    :param hyperparams: the entry (after ``-params`` overrides); not modified
    :param where: name of the entry in messages
    :param verbose: print when a dataset is written
    :return: the entry for the zoo
    """
    hyperparams = copy.deepcopy(dict(hyperparams))
    validate_hyperparams(algo, hyperparams, where)
    pretrain_steps = hyperparams.pop("pretrain_steps", None)
    pretrain_kwargs = dict(hyperparams.pop("pretrain_kwargs", None) or {})
    make_kwargs = hyperparams.pop("make_dataset", None)
    check_env = hyperparams.pop("check_dataset_env", True)
    resolve_replay_buffer(hyperparams, where)
    rb_kwargs = hyperparams.get("replay_buffer_kwargs") or {}
    if isinstance(rb_kwargs, Mapping) and "dataset_id" in rb_kwargs:
        prepare_minari_dataset(rb_kwargs["dataset_id"], env_id, make_kwargs, check_env, verbose)
    if isinstance(rb_kwargs, Mapping) and "path" in rb_kwargs and not os.path.isfile(rb_kwargs["path"]):
        raise ZooConfigError(
            f"{where}: the offline data file {rb_kwargs['path']} does not exist. Fix: download it (robomimic: "
            "python robomimic/scripts/download_datasets.py --tasks lift --dataset_types ph --hdf5_types low_dim) or "
            "override the path with -params \"replay_buffer_kwargs:dict(path='...', obs_keys=[...])\"."
        )
    if pretrain_steps:
        callbacks = hyperparams.get("callback")
        callbacks = [] if callbacks is None else (list(callbacks) if isinstance(callbacks, list) else [callbacks])
        callbacks.append({"sb3_expo.zoo.PretrainCallback": {"n_steps": int(pretrain_steps), **pretrain_kwargs}})
        hyperparams["callback"] = callbacks
    return hyperparams


def _make_experiment_manager_class() -> type:
    from rl_zoo3.exp_manager import ExperimentManager

    class EXPOExperimentManager(ExperimentManager):
        """RL Zoo's ``ExperimentManager`` with EXPO's YAML keys and validation before any env is built."""

        def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
            if self.config.endswith((".yml", ".yaml")) and not os.path.isfile(self.config):
                raise ZooConfigError(f"Config file '{self.config}' does not exist (-conf). EXPO's: zoo_configs/expo.yml.")
            try:
                hyperparams, saved_hyperparams = super().read_hyperparameters()
            except ValueError as e:
                if "Hyperparameters not found" not in str(e):
                    raise
                available = sorted(load_zoo_yaml(self.config)) if self.config.endswith((".yml", ".yaml")) else []
                raise ZooConfigError(
                    f"{self.config} has no entry for {self.env_name.gym_id} (and no 'default' entry). Entries: {available}."
                ) from e
            where = f"{self.config} [{self.env_name.gym_id}]"
            hyperparams = prepare_hyperparams(self.algo, self.env_name.gym_id, hyperparams, where, self.verbose)
            return hyperparams, saved_hyperparams

    return EXPOExperimentManager


def __getattr__(name: str) -> Any:
    # Lazy: importing sb3_expo.zoo must not import rl_zoo3 (optuna, huggingface_sb3) until it is needed.
    if name == "EXPOExperimentManager":
        cls = _make_experiment_manager_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------------------------
# inference loading (enjoy): no replay buffer, no dataset
# ----------------------------------------------------------------------------------------------------------------


def inference_class(algo_cls: type) -> type:
    """A subclass of an off-policy algorithm whose ``load`` skips the replay buffer's offline data.

    Loading an SB3 model rebuilds its replay buffer; with an offline buffer that reads the whole dataset (which
    may not be on the machine that replays the agent). The subclass loads with ``buffer_size=1`` and SB3's plain
    buffer, which is all ``predict`` needs. Do not continue training such a model.

    :param algo_cls: e.g. ``EXPO`` or ``SAC``
    :return: the subclass (same name with ``ForInference``)
    """

    def load(cls: type, path: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffer_size", 1)
        kwargs.setdefault("replay_buffer_class", None)
        kwargs.setdefault("replay_buffer_kwargs", {})
        kwargs.setdefault("optimize_memory_usage", False)
        return super(sub, cls).load(path, *args, **kwargs)  # type: ignore[misc]

    sub = type(f"{algo_cls.__name__}ForInference", (algo_cls,), {"load": classmethod(load), "__module__": __name__})
    return sub
