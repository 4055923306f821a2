"""Using the oq custom-op library (``runtime_ops/``) from an existing ONNX Runtime deployment.

The library is built into the package as ``liboq_ops.so``. ORT loads it per session::

    import onnxruntime as ort
    from oqcompile.runtime import session_options

    session = ort.InferenceSession("model.oq.onnx", session_options(), providers=["CPUExecutionProvider"])
"""

from __future__ import annotations

import pathlib

import onnxruntime as ort

from oqcompile.errors import OQError

__all__ = ["DOMAIN", "ops_library_path", "session_options"]

DOMAIN = "oq"


def ops_library_path() -> pathlib.Path:
    """Path of the installed op library (:class:`OQError` if this installation has none)."""
    path = pathlib.Path(__file__).with_name("liboq_ops.so")
    if not path.is_file():
        raise OQError(f"the oq op library is not installed ({path} is missing): reinstall oqcompile")
    return path


def session_options(options: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """``options`` (or new ones) with the oq op library registered."""
    options = options or ort.SessionOptions()
    options.register_custom_ops_library(str(ops_library_path()))
    return options
