"""Train EXPO (or a baseline) with RL Zoo: ``python -m sb3_expo.train --algo expo --env Pendulum-v1 -conf zoo_configs/expo.yml``.

Every ``rl_zoo3.train`` flag works (``--seed``, ``-n``, ``--eval-freq``, ``-params``, ``-optimize``,
``--storage``, ``--save-replay-buffer``, ``-i`` to resume, ``-P`` for a progress bar, ``--num-threads``, ...).
``python -m rl_zoo3.train --algo expo`` runs the same EXPO code (sb3-expo registers itself with the zoo on import,
:mod:`_sb3_expo_rl_zoo`); this launcher adds, for every algorithm:

* EXPO's extra YAML keys: ``pretrain_steps``, ``pretrain_kwargs``, ``make_dataset``, ``check_dataset_env``
  (see :mod:`sb3_expo.zoo`), and dotted ``replay_buffer_class`` paths (``--algo sac``/``td3``/``tqc`` baselines
  on the same offline buffers);
* a missing ``sb3-expo/...`` demo dataset is written on demand;
* one-line errors, before training starts, for an unknown env id, an unknown YAML key (with the closest valid
  one), a missing dataset or a dataset recorded on another env (exit code 2).

Examples::

    python -m sb3_expo.train --algo expo --env Pendulum-v1 -conf zoo_configs/expo.yml --seed 0 --num-threads 1 -P
    python -m sb3_expo.train --algo sac  --env Pendulum-v1 -conf zoo_configs/sac.yml  --seed 0
    python -m sb3_expo.train --algo expo --env Pendulum-v1 -conf zoo_configs/expo.yml -params pretrain_steps:0 edit_scale:0.2
    python -m sb3_expo.train --algo expo --env Pendulum-v1 -conf zoo_configs/expo.yml -optimize --n-trials 20 -n 5000
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

PROG = "python -m sb3_expo.train"


def _peek(argv: list[str]) -> argparse.Namespace:
    """The few flags this launcher needs before the zoo parses everything (unknown flags are left to the zoo)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--gym-packages", nargs="+", default=[])
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Run RL Zoo's ``train()`` with EXPO registered.

    :param argv: command-line arguments (default: ``sys.argv[1:]``)
    :return: 0 on success, 2 on a configuration error (printed as one line on stderr)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    from sb3_expo.wrappers import OfflineDataError, OfflineDatasetNotFoundError
    from sb3_expo.zoo import ZooConfigError, check_env_id, register

    register()
    import rl_zoo3.train as zoo_train
    from sb3_expo.zoo import EXPOExperimentManager

    try:
        peek = _peek(argv)
        for module in peek.gym_packages:
            importlib.import_module(module)
        if "-h" not in argv and "--help" not in argv:
            check_env_id(peek.env)
        old_argv, old_manager = sys.argv, zoo_train.ExperimentManager
        sys.argv = [PROG, *argv]
        zoo_train.ExperimentManager = EXPOExperimentManager  # the zoo builds its manager by this module-level name
        try:
            zoo_train.train()
        finally:
            sys.argv, zoo_train.ExperimentManager = old_argv, old_manager
    except (ZooConfigError, OfflineDataError, OfflineDatasetNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        if "pip install" not in str(e):  # only the deliberate "install the optional extra" messages (e.g. robosuite)
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
