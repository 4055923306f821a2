"""Where downloads and derived artifacts are cached: ``$OQ_CACHE`` (default ``~/.cache/oqcompile``)."""

from __future__ import annotations

import os
import pathlib

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> pathlib.Path:
    """Return (and create) ``$OQ_CACHE/<parts...>``."""
    root = pathlib.Path(os.environ.get("OQ_CACHE", pathlib.Path.home() / ".cache" / "oqcompile"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
