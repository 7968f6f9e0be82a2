"""RL Zoo's ``ExperimentManager`` with EXPO's extra YAML keys, validation before any env is built, pretraining once
per Optuna study, and a search space bounded by the device's preset."""

from __future__ import annotations

import copy
import hashlib
import os
import pathlib
import re
import time
from collections.abc import Collection, Mapping
from typing import Any, Optional

import rl_zoo3.exp_manager as zoo_exp_manager
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.utils import ALGOS

from sb3_expo.zoo.datasets import prepare_minari_dataset, resolve_replay_buffer
from sb3_expo.zoo.pretraining import PretrainCallback, pretrain_once, pretrained_parts, save_pretrained
from sb3_expo.zoo.tuning import trials_on
from sb3_expo.zoo.validation import ZooConfigError, load_zoo_yaml, validate_hyperparams

_PRETRAIN_CALLBACK = "sb3_expo.zoo.PretrainCallback"


#: The algorithms this package adds to the zoo: their YAML keys and checks apply under ``python -m rl_zoo3.train`` too.
OUR_ALGOS = ("expo", "rlpd")


def default_config(algo: str = "expo") -> Optional[str]:
    """``zoo_configs/<algo>.yml`` of the working directory, else of the source checkout this package runs from."""
    here = pathlib.Path(__file__).resolve().parents[2] / "zoo_configs" / f"{algo}.yml"
    for candidate in (pathlib.Path(f"zoo_configs/{algo}.yml"), here):
        if candidate.is_file():
            return str(candidate)
    return None


def prepare_hyperparams(
    algo: str,
    env_id: str,
    hyperparams: dict[str, Any],
    where: str = "the config",
    verbose: int = 1,
    overrides: Collection[str] = (),
) -> dict[str, Any]:
    """Validate one entry, make its dataset available and turn EXPO's extra keys into zoo-native ones.

    ``pretrain_steps`` / ``pretrain_kwargs`` become a :class:`PretrainCallback` entry appended to ``callback``;
    ``make_dataset`` / ``check_dataset_env`` are consumed here. The returned dict is what the zoo then processes.

    :param algo: zoo algorithm name
    :param env_id: the env id
    :param hyperparams: the entry (after ``-params`` overrides); not modified
    :param where: name of the entry in messages
    :param verbose: print when a dataset is written
    :param overrides: the keys that came from ``-params`` (an error about one of them names ``-params``)
    :return: the entry for the zoo
    """
    hyperparams = copy.deepcopy(dict(hyperparams))
    validate_hyperparams(algo, hyperparams, where, overrides=overrides)
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



def _create_tables(storage: Optional[str], attempts: int = 5) -> None:
    """Open an RDB storage once, retrying: workers started together on a new database race to create its tables."""
    if not storage or storage.endswith(".log"):
        return
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            optuna.storages.RDBStorage(storage)
            return
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


class EXPOExperimentManager(ExperimentManager):
    """RL Zoo's ``ExperimentManager`` with EXPO's YAML keys and checks (``python -m sb3_expo.train``, every algo).

    On top of the zoo: ``--algo expo`` / ``rlpd`` without ``-conf`` reads ``zoo_configs/<algo>.yml``; every key is checked before
    any env is built (a bad ``-params`` key is blamed on ``-params``); ``-optimize`` pretrains once per study (the
    trials load the result) and bounds the search space by the preset of ``--device``; ``-i`` says whether the
    replay buffer was reloaded.
    """

    #: Apply EXPO's processing to this package's algorithms only (:data:`OUR_ALGOS`: the hooked
    #: ``python -m rl_zoo3.train``) or to every algo (``python -m sb3_expo.train``).
    expo_only = False

    def __init__(self, args: Any, algo: str, *posargs: Any, **kwargs: Any) -> None:
        super().__init__(args, algo, *posargs, **kwargs)
        zoo_default = f"hyperparams/{self.algo}.yml"
        if self.algo in OUR_ALGOS and not os.path.isfile(self.config) and self.config.endswith(zoo_default):
            default = default_config(self.algo)  # the zoo has no hyperparams file for our algorithms
            if default is None:
                raise ZooConfigError(
                    f"No -conf given and zoo_configs/{self.algo}.yml not found: pass -conf <your {self.algo}.yml>."
                )
            print(f"Using hyperparameters from {default} (pass -conf to choose another file)")
            self.config = default

    def _ours(self) -> bool:
        return self.algo in OUR_ALGOS or not self.expo_only

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if not self._ours():
            return super().read_hyperparameters()
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
        overrides = set(self.custom_hyperparams or {})
        hyperparams = prepare_hyperparams(self.algo, self.env_name.gym_id, hyperparams, where, self.verbose, overrides)
        return hyperparams, saved_hyperparams

    # -- resuming (-i) ---------------------------------------------------------------------------------------------
    def _load_pretrained_agent(self, hyperparams: dict[str, Any], env: Any) -> Any:
        model = super()._load_pretrained_agent(hyperparams, env)
        if self._ours():
            buffer_file = os.path.join(os.path.dirname(self.trained_agent), "replay_buffer.pkl")
            if not os.path.exists(buffer_file):
                print(
                    f"No replay buffer next to {self.trained_agent}: training continues with an empty online buffer "
                    "(save runs with --save-replay-buffer to keep it)."
                )
            print(f"Continuing training for -n {self.n_timesteps} more env steps; the zoo counts env steps from 0 again.")
        return model

    # -- tuning (-optimize) ----------------------------------------------------------------------------------------
    def objective(self, trial: Any) -> float:
        with trials_on(self.device):  # the sampler's cost knobs are bounded by this device's preset
            return super().objective(trial)

    def hyperparameters_optimization(self) -> None:
        if self._ours():
            _create_tables(self.storage)
            self._pretrain_once_for_study()
        super().hyperparameters_optimization()

    def _pretrain_once_for_study(self) -> None:
        """With ``pretrain_steps``: pretrain one model from the entry (not from a trial's sampled values), save its
        pretrained parts under ``<log folder>/<algo>/pretrained/``, and make every trial's ``PretrainCallback``
        load them. Workers sharing the folder pretrain once in all (:func:`pretrain_once`)."""
        spec = next((c for c in self.specified_callbacks if isinstance(c, Mapping) and _PRETRAIN_CALLBACK in c), None)
        if spec is None or int(spec[_PRETRAIN_CALLBACK].get("n_steps", 0)) <= 0:
            return
        cb_kwargs = dict(spec[_PRETRAIN_CALLBACK])
        entry = {k: v for k, v in sorted(self._hyperparams.items())}
        # the same entry gives the same key in every worker: object addresses (schedules, ...) are left out
        described = re.sub(r" at 0x[0-9a-fA-F]+", "", repr((self.env_name.gym_id, self.algo, entry, sorted(cb_kwargs.items()))))
        key = hashlib.sha256(described.encode()).hexdigest()
        path = pathlib.Path(self.log_folder) / self.algo / "pretrained" / f"{self.env_name}_{key[:16]}.pt"

        def pretrain() -> None:
            env = self.create_envs(1, no_log=True)
            try:
                model = ALGOS[self.algo](env=env, seed=self.seed, verbose=0, device=self.device, **self._hyperparams)
                callback = PretrainCallback(**cb_kwargs)
                progress_bar = callback.pretrain_kwargs["progress_bar"]
                kwargs = {**callback.pretrain_kwargs, "progress_bar": self.show_progress if progress_bar is None else progress_bar}
                print(f"Pretraining once for the study ({callback.n_steps} steps); the trials load {path}")
                model.pretrain(callback.n_steps, **kwargs)
                save_pretrained(model, path, pretrained_parts(kwargs["train_critic"], kwargs["train_edit"]))
            finally:
                env.close()

        pretrain_once(path, pretrain, verbose=self.verbose)
        spec[_PRETRAIN_CALLBACK] = {**cb_kwargs, "load_from": str(path)}


class RLZooExperimentManager(EXPOExperimentManager):
    """What ``python -m rl_zoo3.train`` uses once sb3-expo's hook ran: EXPO's processing for ``--algo expo`` and
    ``--algo rlpd``, the zoo's own behaviour for every other algorithm."""

    expo_only = True


if globals().get("SWAP_INTO_RL_ZOO"):  # set by registration.register_with_rl_zoo (the import hook) during our import
    zoo_exp_manager.ExperimentManager = RLZooExperimentManager
