"""Offline data for EXPO and other SB3 off-policy algorithms.

* Online RL with offline data (RLPD-style symmetric sampling)::

    EXPO("MlpPolicy", env, replay_buffer_class=MinariReplayBuffer,
         replay_buffer_kwargs=dict(dataset_id="sb3-expo/pendulum-medium-v0"))

* Offline-to-online: the same buffer, then ``model.pretrain(...)`` samples ``replay_buffer.sample_offline``.

* GPU-resident replay (online and offline arrays as tensors on the model's device; ``storage="auto"`` does it on
  CUDA only)::

    EXPO("MlpPolicy", env, device="cuda", replay_buffer_class=DeviceReplayBuffer)

Minari and h5py are imported only when a dataset is loaded, so importing this package needs neither.

This package is the import path to use; the code lives by concern in :mod:`sb3_expo.data` (the dataset type,
transforms, validation, the Minari and robomimic readers), :mod:`sb3_expo.buffers` (offline and device-resident replay
buffers) and :mod:`sb3_expo.wrappers.env_wrappers` (the env wrappers).
"""

from sb3_expo.buffers.device import STORAGE_CHOICES, DeviceReplayBuffer, DictDeviceReplayBuffer
from sb3_expo.buffers.offline import (
    DictMinariReplayBuffer,
    DictOfflineReplayBuffer,
    MinariReplayBuffer,
    OfflineReplayBuffer,
    RobomimicReplayBuffer,
    offline_row_mask,
)
from sb3_expo.data.dataset import OfflineDataError, OfflineDataset, OfflineDatasetNotFoundError
from sb3_expo.data.minari import load_minari_dataset, minari_datasets_root, open_minari_dataset
from sb3_expo.data.robomimic import load_robomimic_dataset
from sb3_expo.data.transforms import (
    concat_robomimic_obs,
    flatten_dict_obs,
    flatten_dict_space,
    scale_action,
    transform_reward,
    unscale_action,
)
from sb3_expo.data.validation import check_action_space, check_finite, check_observation_space, validate_offline_dataset
from sb3_expo.wrappers.env_wrappers import ClipActionToSpace, FlattenDictObservation, ShiftScaleReward

__all__ = [
    "ClipActionToSpace",
    "DeviceReplayBuffer",
    "DictDeviceReplayBuffer",
    "DictMinariReplayBuffer",
    "DictOfflineReplayBuffer",
    "FlattenDictObservation",
    "MinariReplayBuffer",
    "OfflineDataError",
    "OfflineDataset",
    "OfflineDatasetNotFoundError",
    "OfflineReplayBuffer",
    "RobomimicReplayBuffer",
    "STORAGE_CHOICES",
    "ShiftScaleReward",
    "check_action_space",
    "check_finite",
    "check_observation_space",
    "concat_robomimic_obs",
    "flatten_dict_obs",
    "flatten_dict_space",
    "load_minari_dataset",
    "load_robomimic_dataset",
    "minari_datasets_root",
    "offline_row_mask",
    "open_minari_dataset",
    "scale_action",
    "transform_reward",
    "unscale_action",
    "validate_offline_dataset",
]
