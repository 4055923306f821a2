"""Using the oq custom-op library (``runtime_ops/``) from an existing ONNX Runtime deployment.

The library is built into the package as ``liboq_ops.so``. ORT loads it per session::

    import onnxruntime as ort
    from oqcompile.runtime import session_options

    session = ort.InferenceSession("model.oq.onnx", session_options(), providers=["CPUExecutionProvider"])
"""

from __future__ import annotations

import ctypes
import functools
import importlib.resources
import pathlib

import onnxruntime as ort

from oqcompile import __version__
from oqcompile.errors import OQError

__all__ = ["DOMAIN", "LIBRARY_METADATA", "cpu_isas", "library_description", "ops_library_path", "session_options"]

DOMAIN = "oq"
# Metadata key of a lowered model naming the library it needs.
LIBRARY_METADATA = "oq.runtime_library"


def ops_library_path() -> pathlib.Path:
    """Path of the installed op library (:class:`OQError` if this installation has none)."""
    # In the editable install the Python files are the checkout's and the built library lies in
    # site-packages; importlib.resources sees both.
    path = pathlib.Path(str(importlib.resources.files("oqcompile") / "liboq_ops.so"))
    if not path.is_file():
        raise OQError(f"the oq op library is not installed ({path} is missing): reinstall oqcompile")
    return path


def library_description() -> str:
    """What a lowered model's metadata says about the library it needs."""
    return (f"liboq_ops.so of oqcompile {__version__} (custom-op domain {DOMAIN!r}); register it with "
            "oqcompile.runtime.session_options() or SessionOptions.register_custom_ops_library(path), "
            "path from `python -c 'import oqcompile.runtime as r; print(r.ops_library_path())'`")


def session_options(options: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """``options`` (or new ones) with the oq op library registered."""
    options = options or ort.SessionOptions()
    options.register_custom_ops_library(str(ops_library_path()))
    return options


@functools.cache
def cpu_isas() -> list[str]:
    """CPU instruction sets the library's kernels (QMatMul panels, Hadamard) can use here, ``"scalar"`` first.

    Sessions use the last (best) one unless the environment variable ``OQ_CPU_ISA`` names another.
    """
    library = ctypes.CDLL(str(ops_library_path()))
    library.OqSupportedCpuIsas.restype = ctypes.c_char_p
    return library.OqSupportedCpuIsas().decode().split(",")
