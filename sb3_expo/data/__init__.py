"""Offline data as plain numpy arrays, validated against an env's spaces (the reading side; the commands that write
demo datasets are in :mod:`sb3_expo.datasets`).

* ``dataset.py``: :class:`~sb3_expo.data.dataset.OfflineDataset` (the table of transitions) and the errors;
* ``transforms.py``: observation flattening, action rescaling, reward shift/scale, shared with the replay buffers and
  the env wrappers so both sides build the same values;
* ``validation.py``: checks of a dataset against an env's spaces (shapes, Dict keys, action bounds, NaN/inf);
* ``minari.py``, ``robomimic.py``: the loaders (Minari datasets; robomimic low-dim HDF5 files).

Import the public names from :mod:`sb3_expo.wrappers`, which re-exports them.
"""
