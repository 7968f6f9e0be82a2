"""Replay buffers (SB3 ``replay_buffer_class`` values).

* ``device.py``: :class:`~sb3_expo.buffers.device.DeviceReplayBuffer`, SB3's buffer with its arrays on the model's
  device (GPU-resident replay) when asked to;
* ``offline.py``: buffers with a fixed offline part (Minari, robomimic, any
  :class:`~sb3_expo.data.dataset.OfflineDataset`) and an online part, sampled symmetrically (RLPD / EXPO).

Import the public names from :mod:`sb3_expo.wrappers`, which re-exports them.
"""
