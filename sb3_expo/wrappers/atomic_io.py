"""Kept for old imports: atomic file writes now live in :mod:`sb3_expo.utils.atomic_io`."""

from sb3_expo.utils.atomic_io import atomic_path

__all__ = [
    "atomic_path",
]
