"""Where downloads and derived artifacts are cached: ``$OQ_CACHE`` (default ``~/.cache/oqcompile``).

Each entry is made under :func:`making`, a lock, so two processes that start on a
fresh cache at once (two compiles, two test workers) make it once and never read it half-written.
"""

from __future__ import annotations

import os
import pathlib

import filelock

__all__ = ["cache_dir", "making"]


def cache_dir(*parts: str) -> pathlib.Path:
    """Return (and create) ``$OQ_CACHE/<parts...>``."""
    root = pathlib.Path(os.environ.get("OQ_CACHE", pathlib.Path.home() / ".cache" / "oqcompile"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def making(entry: pathlib.Path) -> filelock.FileLock:
    """A lock held while ``entry`` (a file or folder in the cache) is checked for and made; the lock
    files live in ``$OQ_CACHE/.locks``, out of the entries' folders."""
    name = entry.relative_to(cache_dir()).as_posix().replace("/", "--")
    return filelock.FileLock(cache_dir(".locks") / f"{name}.lock")
