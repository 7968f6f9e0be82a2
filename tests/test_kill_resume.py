"""A killed run resumes, and a killed save loses nothing: real subprocesses, killed with SIGKILL.

1. ``learn()`` with ``CheckpointCallback(save_replay_buffer=True)`` is killed mid-run; the newest checkpoint whose
   buffer was written loads, holds the ``num_timesteps`` its name says and a buffer of as many transitions, and
   training continues from there.
2. A process that saves to one path over and over is killed mid-save, several times; the checkpoint at that path
   still loads every time (saves write a temporary file and rename it into place).
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest

from sb3_expo import EXPO

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX only")

PREAMBLE = """
import sys, torch
torch.set_num_threads(1)
from sb3_expo import EXPO, get_preset
model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **get_preset("tiny", learning_starts=20))
"""


def _start(script: str, tmp_path: pathlib.Path) -> subprocess.Popen:
    code = textwrap.dedent(PREAMBLE) + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the subprocess ended early:\n{proc.stderr.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the subprocess")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_learn_killed_resumes_from_the_newest_complete_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    proc = _start(
        f"""
        from stable_baselines3.common.callbacks import CheckpointCallback
        cb = CheckpointCallback(save_freq=40, save_path={str(ckpt)!r}, name_prefix="expo", save_replay_buffer=True)
        model.learn(10**6, callback=cb)
        """,
        tmp_path,
    )
    _wait_for(lambda: len(list(ckpt.glob("expo_replay_buffer_*_steps.pkl"))) >= 3, proc)
    _kill(proc)
    steps = sorted(
        int(m.group(1))
        for p in ckpt.glob("expo_*_steps.zip")
        if (m := re.fullmatch(r"expo_(\d+)_steps\.zip", p.name)) and (ckpt / f"expo_replay_buffer_{m.group(1)}_steps.pkl").exists()
    )
    assert steps and steps[-1] >= 120
    last = steps[-1]
    model = EXPO.load(ckpt / f"expo_{last}_steps.zip", env=gym.make("Pendulum-v1"))
    model.load_replay_buffer(ckpt / f"expo_replay_buffer_{last}_steps.pkl")
    assert model.num_timesteps == last
    # one env: one transition per env step, less the last one: SB3 calls the callbacks between env.step and storing
    # that step's transition (SAC's checkpoints hold the same)
    assert model.replay_buffer.size() == last - 1
    assert np.isfinite(model.replay_buffer.rewards[: last - 1]).all()
    model.learn(40, reset_num_timesteps=False)
    assert model.num_timesteps == last + 40 and model.replay_buffer.size() == last - 1 + 40


def test_save_killed_midway_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "model.zip"
    for attempt, delay in enumerate((0.05, 0.13, 0.31)):
        proc = _start(
            f"""
            model.save({str(path)!r})
            print("saved", flush=True)
            while True:  # saving over and over: a kill lands inside a save most of the time
                model.save({str(path)!r})
            """,
            tmp_path,
        )
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(delay)
        _kill(proc)
        loaded = EXPO.load(path)  # raises on a truncated or corrupt zip
        assert loaded.predict(np.zeros(3, dtype=np.float32), deterministic=True)[0].shape == (1,), attempt
    # the only leftovers of the killed saves are hidden temporary files beside the checkpoint
    others = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(name.startswith(".model.zip.") for name in others), others
    assert others, "no kill landed inside a save (no temporary file was left): the test did not test anything"
