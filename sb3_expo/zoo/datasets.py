"""The offline data of a zoo entry: dotted buffer classes, expanded paths, and Minari demo datasets written on demand."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Optional

from sb3_expo.zoo.validation import ZooConfigError, _import_dotted

DEMO_DATASET_PREFIX = "sb3-expo/"
DEFAULT_DEMO_EPISODES = 20


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
    from sb3_expo.wrappers import minari_datasets_root

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
