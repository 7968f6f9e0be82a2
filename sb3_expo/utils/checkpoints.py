"""EXPO checkpoint files: where SB3 writes a save, and a check that a file is an intact EXPO checkpoint before
SB3's ``load`` reads it (so that a wrong or damaged file gets a message that names the problem)."""

from __future__ import annotations

import json
import pathlib
import warnings
import zipfile
from typing import Any, Union


def sb3_save_path(path: Union[str, pathlib.Path], suffix: str) -> pathlib.Path:
    """The file SB3's ``open_path`` writes for ``path``: ``.<suffix>`` added to a name without one, ``<path>_2``
    when ``path`` is a folder."""
    path = pathlib.Path(path)
    if path.suffix == "":
        path = pathlib.Path(f"{path}.{suffix}")
    if path.is_dir():
        warnings.warn(f"Path '{path}' is a folder. Will save instead to {path}_2", stacklevel=3)
        path = pathlib.Path(f"{path}_2")
    return path


def check_expo_checkpoint(path: Any) -> None:
    """Fail early, with a message that names the problem, on a file that is not an EXPO checkpoint."""
    if not isinstance(path, (str, pathlib.Path)):
        return  # file-like objects: let SB3 read them
    path = pathlib.Path(path)
    if not path.exists() and path.with_suffix(".zip").exists():
        path = path.with_suffix(".zip")
    if not path.exists():
        raise FileNotFoundError(f"No EXPO checkpoint at '{path}' (also tried '{path}.zip').")
    try:
        with zipfile.ZipFile(path) as archive:
            if "data" not in archive.namelist():
                raise ValueError(f"'{path}' is a zip file but not an SB3 checkpoint (it has no 'data' entry).")
            data = json.loads(archive.read("data"))
            names = set(archive.namelist())
            bad = archive.testzip()
    except zipfile.BadZipFile as e:
        raise ValueError(
            f"'{path}' is not a valid SB3/EXPO checkpoint: it is not a readable zip file ({e}). The file may be "
            "truncated or corrupt; re-save the model with model.save()."
        ) from e
    except json.JSONDecodeError as e:
        raise ValueError(f"'{path}' has a corrupt 'data' entry ({e}); re-save the model with model.save().") from e
    if bad is not None:
        raise ValueError(f"'{path}' is corrupt: member '{bad}' fails its CRC check. Re-save the model with model.save().")
    # Every EXPO checkpoint stores the base policy's optimiser; no other SB3 algorithm does.
    if "policy.base_optimizer.pth" not in names:
        policy_class = data.get("policy_class", {})
        raise ValueError(
            f"'{path}' is not an EXPO checkpoint (its policy class comes from module "
            f"'{policy_class.get('__module__', '?')}' and it has no EXPO base-policy optimiser). Load it with the "
            "algorithm that saved it (e.g. SAC.load)."
        )
    missing = [f"no '{m}' entry" + (" (the network weights)" if m == "policy.pth" else "") for m in _CHECKPOINT_MEMBERS if m not in names]
    missing += [f"its 'data' entry has no '{k}'" for k in _CHECKPOINT_DATA_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"'{path}' is an incomplete EXPO checkpoint: {'; '.join(missing)}. The file was written partly or "
            "edited; load an intact checkpoint, or re-save the model with model.save()."
        )


# What every EXPO checkpoint holds (model.save): the zip members and the keys of its 'data' entry that load() needs.
_CHECKPOINT_MEMBERS = (
    "policy.pth",
    "policy.base_optimizer.pth",
    "policy.edit_optimizer.pth",
    "policy.critic_optimizer.pth",
    "policy.temperature_optimizer.pth",
)
_CHECKPOINT_DATA_KEYS = ("policy_class", "observation_space", "action_space", "policy_kwargs")
