"""Kept for old imports: its names now live in :mod:`sb3_expo.data`; import them from :mod:`sb3_expo.wrappers`."""

from sb3_expo.data.dataset import (
    DoneMode,
    ObsArray,
    OfflineDataError,
    OfflineDataset,
    OfflineDatasetNotFoundError,
    OutOfBounds,
)
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
from sb3_expo.data.validation import (
    check_action_space,
    check_finite,
    check_observation_space,
    validate_offline_dataset,
)

__all__ = [
    "DoneMode",
    "ObsArray",
    "OfflineDataError",
    "OfflineDataset",
    "OfflineDatasetNotFoundError",
    "OutOfBounds",
    "check_action_space",
    "check_finite",
    "check_observation_space",
    "concat_robomimic_obs",
    "flatten_dict_obs",
    "flatten_dict_space",
    "load_minari_dataset",
    "load_robomimic_dataset",
    "minari_datasets_root",
    "open_minari_dataset",
    "scale_action",
    "transform_reward",
    "unscale_action",
    "validate_offline_dataset",
]
