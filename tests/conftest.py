"""Shared pytest fixtures.

``pendulum_dataset_id``: a small real Minari dataset (Pendulum-v1, scripted noisy swing-up controller, 10 episodes
x 200 steps = 2000 transitions), written once per session with minari's ``DataCollector`` under a session temp dir.
Requesting it (or ``minari_datasets_path``) points ``MINARI_DATASETS_PATH`` at that dir for the rest of the
session, so ``MinariReplayBuffer(dataset_id=pendulum_dataset_id)`` / ``load_minari_dataset`` find it. A test
that monkeypatches ``MINARI_DATASETS_PATH`` elsewhere gets it restored at teardown.

The device: models are built with SB3's ``device="auto"`` (CUDA when present) unless a test names one.
``SB3_EXPO_TEST_DEVICE=cuda`` insists on CUDA (an error without a GPU; ``bench/gpu_check.sh`` sets it),
``SB3_EXPO_TEST_DEVICE=cpu`` hides the GPUs (CI has none anyway). The header of the run names the device.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

TEST_DEVICE = os.environ.get("SB3_EXPO_TEST_DEVICE", "auto").strip().lower()
if TEST_DEVICE == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch initialises CUDA

import pytest  # noqa: E402
import torch as th  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    if TEST_DEVICE not in ("auto", "cpu", "cuda"):
        raise pytest.UsageError(f"SB3_EXPO_TEST_DEVICE={TEST_DEVICE!r}: use auto, cpu or cuda.")
    if TEST_DEVICE == "cuda" and not th.cuda.is_available():
        raise pytest.UsageError("SB3_EXPO_TEST_DEVICE=cuda, but torch sees no CUDA device (torch.cuda.is_available() is False).")


def pytest_report_header(config: pytest.Config) -> str:
    device = f"cuda ({th.cuda.get_device_name(0)})" if th.cuda.is_available() else "cpu"
    return f"sb3-expo test device: {device} (SB3_EXPO_TEST_DEVICE={TEST_DEVICE})"

PENDULUM_DATASET_ID = "sb3-expo/pendulum-medium-v0"
PENDULUM_EPISODES = 10


@pytest.fixture(scope="session")
def minari_datasets_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """Session Minari root; sets ``MINARI_DATASETS_PATH`` to it for the session."""
    root = tmp_path_factory.mktemp("minari_datasets")
    patch = pytest.MonkeyPatch()
    patch.setenv("MINARI_DATASETS_PATH", str(root))
    yield root
    patch.undo()


@pytest.fixture(scope="session")
def pendulum_dataset_id(minari_datasets_path: pathlib.Path) -> str:
    """Id of a 2000-transition Pendulum-v1 'medium' Minari dataset (written once per session)."""
    from sb3_expo.datasets.make_minari import make_minari_dataset

    make_minari_dataset("Pendulum-v1", PENDULUM_DATASET_ID, n_episodes=PENDULUM_EPISODES, seed=0, quality="medium")
    return PENDULUM_DATASET_ID


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the test (2 shared cores: faster and steadier for tiny tensors), restored after."""
    n = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(n)
