"""SB3's own generic tests, as SB3 ships them in the sdist of the installed version, with EXPO in SAC's place.

``.ci/setup`` fetches them (``pip download --no-deps --no-binary :all: stable-baselines3==<installed>``) into
``.venv/sb3_tests/<version>/`` (not committed: they are SB3's code). Each file runs in a subprocess with
``tests/sb3_suite/conftest_plugin.py``, which swaps ``stable_baselines3.SAC`` for EXPO (tiny preset sizes), keeps
only the SAC cases, and deselects those that cannot apply to EXPO, each with its reason (printed in the output).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import stable_baselines3

REPO = pathlib.Path(__file__).resolve().parents[1]
SB3_TESTS = REPO / ".venv" / "sb3_tests" / stable_baselines3.__version__
FILES = ["test_save_load.py", "test_predict.py", "test_deterministic.py", "test_train_eval_mode.py", "test_callbacks.py", "test_run.py"]


@pytest.mark.parametrize("name", FILES)
def test_sb3_generic_tests_pass_with_expo_as_sac(name, tmp_path):
    if not (SB3_TESTS / name).is_file():
        pytest.skip(f"SB3's tests are not fetched: run `bash .ci/setup` (expects {SB3_TESTS / name})")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "sb3_suite"), str(REPO)]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "conftest_plugin", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", "--basetemp", str(tmp_path), name]
    result = subprocess.run(cmd, cwd=SB3_TESTS, env=env, capture_output=True, text=True, timeout=900)
    tail = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, f"SB3's {name} with EXPO in SAC's place failed:\n{tail}"
    assert " passed" in result.stdout, tail
