"""Kept so that checkpoints saved before the split load (they name their buffer class by this module path).

The classes live in :mod:`sb3_expo.buffers.device`; import them from :mod:`sb3_expo.wrappers`.
"""

from sb3_expo.buffers.device import STORAGE_CHOICES, DeviceReplayBuffer, DictDeviceReplayBuffer

__all__ = [
    "DeviceReplayBuffer",
    "DictDeviceReplayBuffer",
    "STORAGE_CHOICES",
]
