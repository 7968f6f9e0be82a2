"""Offline-to-online in the zoo: EXPO's pretraining as a callback (the YAML key ``pretrain_steps``), done once per
Optuna study and shared by its trials."""

from __future__ import annotations

import os
import pathlib
import socket
import time
from collections.abc import Callable
from typing import Any, Optional

import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ProgressBarCallback

from sb3_expo.utils.atomic_io import atomic_path
from sb3_expo.zoo.validation import ZooConfigError

#: The policy's modules and optimisers that ``pretrain`` updates, by what it trains.
_BASE_PARTS = ("base_policy", "base_policy_ema", "base_optimizer")
_CRITIC_PARTS = ("q_ensemble", "q_ensemble_target", "critic_optimizer")
_EDIT_PARTS = ("edit_policy", "edit_optimizer", "temperature", "temperature_optimizer")
_COUNTERS = ("_n_base_updates", "_n_updates", "_n_pretrain_steps")


def pretrained_parts(train_critic: bool = False, train_edit: bool = False) -> tuple[str, ...]:
    """Names of the policy attributes that ``EXPO.pretrain(train_critic=..., train_edit=...)`` changes."""
    return _BASE_PARTS + (_CRITIC_PARTS if (train_critic or train_edit) else ()) + (_EDIT_PARTS if train_edit else ())


def save_pretrained(model: Any, path: Any, parts: tuple[str, ...]) -> None:
    """Write the pretrained parts of ``model`` (state dicts and update counters) to ``path``, atomically."""
    state = {"parts": {name: getattr(model.policy, name).state_dict() for name in parts}}
    state["counters"] = {name: getattr(model, name, 0) for name in _COUNTERS}
    with atomic_path(pathlib.Path(path)) as tmp:
        th.save(state, tmp)


def load_pretrained(model: Any, path: Any) -> None:
    """Load parts written by :func:`save_pretrained` into ``model``. Each optimiser keeps ``model``'s own learning
    rates (a trial may have sampled other ones than the model that pretrained)."""
    state = th.load(path, map_location=model.device, weights_only=True)
    for name, part_state in state["parts"].items():
        part = getattr(model.policy, name)
        if isinstance(part, th.optim.Optimizer):
            lrs = [group["lr"] for group in part.param_groups]
            part.load_state_dict(part_state)
            for group, lr in zip(part.param_groups, lrs):
                group["lr"] = lr
        else:
            part.load_state_dict(part_state)
    for name, value in state["counters"].items():
        setattr(model, name, value)
    for group in model.policy.base_optimizer.param_groups:  # the base LR follows its schedule from the loaded count
        group["lr"] = model._base_learning_rate()


def _learn_shows_progress_bar(learn_locals: dict[str, Any]) -> bool:
    """Whether the ``learn()`` call that starts this callback shows SB3's bar: ``learn(progress_bar=True)``, or a
    ``ProgressBarCallback`` among its callbacks (how the zoo's ``-P`` adds it)."""

    def has_bar(callback: Any) -> bool:
        if isinstance(callback, ProgressBarCallback):
            return True
        return isinstance(callback, CallbackList) and any(has_bar(c) for c in callback.callbacks)

    return bool(learn_locals.get("progress_bar", False)) or has_bar(learn_locals.get("callback"))


def _lock_is_stale(lock: pathlib.Path) -> bool:
    """A lock left by a dead process of this machine (its pid and host are in the file)."""
    try:
        host, pid = lock.read_text().split(":")
        if host != socket.gethostname():
            return False
        os.kill(int(pid), 0)
        return False
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False


def pretrain_once(path: Any, pretrain: Callable[[], Any], poll_seconds: float = 2.0, verbose: int = 1) -> None:
    """Make sure ``path`` exists: the first process to take ``<path>.lock`` runs ``pretrain()`` (which writes
    ``path``), the others wait for it. Workers of one study on one machine, or on machines that share the folder,
    pretrain once in all."""
    path = pathlib.Path(path)
    lock = path.with_name(path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    announced = False
    while not path.exists():
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _lock_is_stale(lock):
                lock.unlink(missing_ok=True)
                continue
            if verbose and not announced:
                print(f"Waiting for another worker to finish the study's pretraining ({path})")
                announced = True
            time.sleep(poll_seconds)
            continue
        try:
            os.write(fd, f"{socket.gethostname()}:{os.getpid()}".encode())
            os.close(fd)
            if not path.exists():
                pretrain()
        finally:
            lock.unlink(missing_ok=True)

class PretrainCallback(BaseCallback):
    """Run :meth:`EXPO.pretrain <sb3_expo.EXPO.pretrain>` once, when training starts (offline-to-online).

    Configured by the YAML key ``pretrain_steps`` (the launcher adds this callback), or directly::

        callback:
          - sb3_expo.zoo.PretrainCallback: {n_steps: 2000}

    It does nothing when the model already has base-policy updates (a run resumed with ``-i``), unless
    ``force=True``. With ``load_from`` (what ``-optimize`` sets: the study pretrains once), it loads the pretrained
    parts from that file instead of pretraining.

    :param n_steps: pretraining steps
    :param train_critic: also pretrain the critic (default False: the paper pretrains only the base policy)
    :param train_edit: also pretrain the edit policy (implies ``train_critic``)
    :param gradient_steps: critic updates per pretraining step (with ``train_critic``)
    :param batch_size: minibatch size (default: the model's)
    :param progress_bar: show SB3's progress bar (default: as ``learn(progress_bar=...)``, the zoo's ``-P``)
    :param log_interval: dump the logs every this many steps
    :param force: pretrain even if the model already has base-policy updates
    :param verbose: 1 prints a line before and after pretraining
    :param load_from: a file of :func:`save_pretrained` to load instead of pretraining
    """

    def __init__(
        self,
        n_steps: int,
        train_critic: bool = False,
        train_edit: bool = False,
        gradient_steps: int = 1,
        batch_size: Optional[int] = None,
        progress_bar: Optional[bool] = None,
        log_interval: int = 1000,
        force: bool = False,
        verbose: int = 1,
        load_from: Optional[str] = None,
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
        self.load_from = load_from
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
        if self.load_from is not None:
            if self.verbose:
                print(f"Loading the study's pretrained parts from {self.load_from}")
            load_pretrained(model, self.load_from)
            self.done = True
            return
        if self.verbose:
            print(f"Pretraining the base policy for {self.n_steps} steps on the offline data")
        kwargs = dict(self.pretrain_kwargs)
        if kwargs["progress_bar"] is None:  # opt-in the same way as learn()'s bar (the zoo's -P)
            kwargs["progress_bar"] = _learn_shows_progress_bar(self.locals)
        model.pretrain(self.n_steps, **kwargs)
        self.done = True

    def _on_step(self) -> bool:
        return True
