"""Small demo datasets: scripted controllers and a Minari writer (``python -m sb3_expo.datasets.make_minari``).

Names are imported lazily so that ``python -m sb3_expo.datasets.make_minari`` does not import the module twice
and so that importing this package does not need minari.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "make_minari_dataset": "sb3_expo.datasets.make_minari",
    "episode_returns": "sb3_expo.datasets.make_minari",
    "CONTROLLERS": "sb3_expo.datasets.controllers",
    "QUALITY_PRESETS": "sb3_expo.datasets.controllers",
    "NoisyController": "sb3_expo.datasets.controllers",
    "pendulum_swingup": "sb3_expo.datasets.controllers",
    "mountain_car_bang_bang": "sb3_expo.datasets.controllers",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
