"""sb3-expo: EXPO (Expressive Policy Optimization, Dong et al. 2025) for Stable-Baselines3.

>>> from sb3_expo import EXPO
>>> model = EXPO("MlpPolicy", "Pendulum-v1", **get_preset("cpu")).learn(10_000)  # doctest: +SKIP
"""

from sb3_expo.config import DiffusionConfig, OTFConfig
from sb3_expo.expo import EXPO, NonFiniteLossError
from sb3_expo.policies import EXPOPolicy, MlpPolicy, MultiInputPolicy
from sb3_expo.presets import PRESETS, get_preset
from sb3_expo.rlpd import RLPD

__version__ = "0.1.0"

__all__ = [
    "EXPO",
    "PRESETS",
    "DiffusionConfig",
    "EXPOPolicy",
    "MlpPolicy",
    "MultiInputPolicy",
    "NonFiniteLossError",
    "OTFConfig",
    "RLPD",
    "get_preset",
]
