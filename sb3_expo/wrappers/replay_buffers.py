"""Kept so that checkpoints saved before the split load (they name their buffer class by this module path).

The classes live in :mod:`sb3_expo.buffers.offline`; import them from :mod:`sb3_expo.wrappers`.
"""

from sb3_expo.buffers.offline import (
    DictMinariReplayBuffer,
    DictOfflineReplayBuffer,
    MinariReplayBuffer,
    OfflineDatasetMissingWarning,
    OfflineReplayBuffer,
    RobomimicReplayBuffer,
    offline_row_mask,
)

__all__ = [
    "DictMinariReplayBuffer",
    "DictOfflineReplayBuffer",
    "MinariReplayBuffer",
    "OfflineDatasetMissingWarning",
    "OfflineReplayBuffer",
    "RobomimicReplayBuffer",
    "offline_row_mask",
]
