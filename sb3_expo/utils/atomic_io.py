"""Atomic file writes: write to a temporary file in the destination's folder, then ``os.replace`` it into place.

A write that fails partway (disk full, an object that cannot be pickled, a killed process) leaves the previous file
at the destination untouched, and removes its temporary file. ``os.replace`` is atomic on POSIX and Windows when
both paths are on the same file system, which a temporary file in the same folder guarantees.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def _new_file_mode(destination: pathlib.Path) -> int:
    """The permission bits a plain ``open(destination, "w")`` would give (the old file's, or 0o666 minus umask)."""
    try:
        return destination.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(destination: PathLike, suffix: str = "") -> Iterator[pathlib.Path]:
    """Yield a fresh temporary path next to ``destination``; on success, move it onto ``destination`` atomically.

    The caller writes the whole file at the yielded path (by name: the path does not exist yet when yielded, so
    writers that refuse to overwrite, such as ``h5py.File(path, "w-")``, work too). If the ``with`` body raises, the
    temporary file is deleted and ``destination`` is left as it was. Missing parent folders are created.

    :param destination: the final path.
    :param suffix: ending of the temporary file's name (some writers add a suffix when the name has none).
    """
    destination = pathlib.Path(destination)
    folder = destination.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    tmp = pathlib.Path(name)
    tmp.unlink()  # the writer creates it (some writers refuse an existing file)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write to '{destination}': the writer did not create '{tmp}'")
        os.chmod(tmp, _new_file_mode(destination))
        with open(tmp, "rb") as f:  # the bytes reach the disk before the rename makes them the checkpoint
            os.fsync(f.fileno())
        os.replace(tmp, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself reaches the disk (POSIX; not possible on Windows)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
