"""Replay a trained agent with RL Zoo: ``python -m sb3_expo.enjoy --algo expo --env Pendulum-v1 -f logs --no-render``.

Every ``rl_zoo3.enjoy`` flag works (``-n``, ``--exp-id``, ``--load-best``, ``--stochastic``, ...). Differences:

* EXPO is registered (``--algo expo``);
* the default log folder is ``logs`` (the zoo's default, ``rl-trained-agents``, would try to download from the
  Hugging Face hub);
* off-policy models are loaded without their replay buffer (``buffer_size=1``, SB3's plain buffer), so the
  offline dataset they were trained with does not need to be on this machine.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Optional

PROG = "python -m sb3_expo.enjoy"


def _import_zoo_enjoy() -> Any:
    """``import rl_zoo3.enjoy``, also when ``requests`` is missing.

    rl_zoo3 2.9's ``enjoy`` imports ``load_from_hub``, which imports ``requests``, a package rl_zoo3 does not
    declare (recent huggingface_hub no longer pulls it in). Only the Hugging Face download path needs it, so a stub
    that explains this replaces ``rl_zoo3.load_from_hub`` when ``requests`` is absent.
    """
    try:
        import rl_zoo3.enjoy as zoo_enjoy
    except ModuleNotFoundError as e:
        if e.name != "requests":
            raise
        stub = types.ModuleType("rl_zoo3.load_from_hub")

        def download_from_hub(*args: Any, **kwargs: Any) -> None:
            raise FileNotFoundError(
                "No trained agent in the log folder, and downloading one from the Hugging Face hub needs the "
                "'requests' package (pip install requests). Pass -f <your log folder> (default: logs)."
            )

        stub.download_from_hub = download_from_hub  # type: ignore[attr-defined]
        sys.modules["rl_zoo3.load_from_hub"] = stub
        import rl_zoo3.enjoy as zoo_enjoy
    return zoo_enjoy


def main(argv: Optional[list[str]] = None) -> int:
    """Run RL Zoo's ``enjoy()`` with EXPO registered.

    :param argv: command-line arguments (default: ``sys.argv[1:]``)
    :return: 0 on success, 2 on an error in the arguments (printed as one line on stderr)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    from sb3_expo.zoo import ZooConfigError, check_env_id, inference_class, register
    from sb3_expo.train import _peek

    register()
    zoo_enjoy = _import_zoo_enjoy()
    from rl_zoo3.utils import ALGOS

    if not any(a in ("-f", "--folder") or a.startswith("--folder=") for a in argv):
        argv = [*argv, "-f", "logs"]
    saved = dict(ALGOS)
    try:
        if "-h" not in argv and "--help" not in argv:
            check_env_id(_peek(argv).env)
        for name, cls in saved.items():
            if isinstance(cls, type) and issubclass(cls, OffPolicyAlgorithm):
                ALGOS[name] = inference_class(cls)
        old_argv = sys.argv
        sys.argv = [PROG, *argv]
        try:
            zoo_enjoy.enjoy()
        finally:
            sys.argv = old_argv
    except (ZooConfigError, FileNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except (AssertionError, ValueError) as e:
        # the zoo's own "no trained agent found in ..." checks
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    finally:
        ALGOS.clear()
        ALGOS.update(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
