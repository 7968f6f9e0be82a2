"""Registers EXPO with RL Zoo's own CLI (``python -m rl_zoo3.train --algo expo``), at import time.

RL Zoo has no plugin API: its ``--algo`` choices are the keys of ``rl_zoo3.utils.ALGOS`` when ``train()`` runs. The
``sb3_expo_rl_zoo.pth`` file that sb3-expo installs imports this module at interpreter start-up. It only adds an
import hook (no torch, no sb3_expo, nothing else is imported): when ``rl_zoo3.exp_manager`` has been imported, which
rl_zoo3's train and enjoy do before they parse their arguments, the hook calls
:func:`sb3_expo.zoo.registration.register_with_rl_zoo`. That adds ``expo`` to the zoo's algorithm and sampler tables
and gives the zoo the manager that understands EXPO's extra YAML keys for ``--algo expo`` (other algorithms are
left exactly as the zoo runs them).

``SB3_EXPO_RL_ZOO=0`` switches the hook off.
"""

import os
import sys

_TRIGGER = "rl_zoo3.exp_manager"


class _RegisterAfterImport:
    """A ``sys.meta_path`` finder that wraps the loader of ``rl_zoo3.exp_manager`` to register EXPO afterwards."""

    def find_spec(self, name, path=None, target=None):
        if name != _TRIGGER:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            try:
                from sb3_expo.zoo.registration import register_with_rl_zoo
            except ImportError:  # sb3-expo uninstalled while the .pth stayed behind: leave the zoo alone
                return
            register_with_rl_zoo()

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    """Add the hook once (called by ``sb3_expo_rl_zoo.pth``)."""
    if os.environ.get("SB3_EXPO_RL_ZOO", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
