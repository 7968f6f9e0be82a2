"""The four learned parts of EXPO, one module each."""

from sb3_expo.parts.diffusion import DiffusionBasePolicy, NoisePredictionNetwork
from sb3_expo.parts.edit_policy import EditPolicy
from sb3_expo.parts.q_ensemble import QEnsemble
from sb3_expo.parts.temperature import Temperature

__all__ = ["DiffusionBasePolicy", "EditPolicy", "NoisePredictionNetwork", "QEnsemble", "Temperature"]
