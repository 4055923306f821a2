"""Weights that a compile makes live in scratch files, not in the process's memory.

Every pass rewrites weights: a rotation replaces each linear's weight by a new array, weight
quantization by codes and scales. Held in memory, the new weights of a pass add up to the
whole model. Inside :func:`spilled_weights` (which :func:`oqcompile.compiler.compile_file`
opens) :func:`new_tensor` writes every new weight of at least ``SPILL_BYTES`` to its own file
in a scratch folder and returns it as a memory-mapped ``onnx_ir`` external tensor, and
:func:`discard` unlinks that file once the graph drops the weight. Resident memory is then the
weights a pass is working on plus the pages the kernel chooses to cache; disk holds about one
model. Outside the context (the in-memory :func:`oqcompile.compiler.optimize`) tensors stay in
memory; either way the stored bytes are the same.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

__all__ = ["SPILL_BYTES", "discard", "new_tensor", "spilled_weights"]

SPILL_BYTES = 1 << 20  # smaller tensors (norm gains, biases, scales) stay in memory

_folder: contextvars.ContextVar[pathlib.Path | None] = contextvars.ContextVar("oq_scratch_folder", default=None)


@contextlib.contextmanager
def spilled_weights(parent: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Spill new weights into a hidden scratch folder in ``parent`` (removed on exit, with
    whatever is left in it); a model that still refers to them must be saved before then."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix=".oq-weights-", dir=parent))
    token = _folder.set(folder)
    try:
        yield folder
    finally:
        _folder.reset(token)
        shutil.rmtree(folder, ignore_errors=True)


def new_tensor(name: str, array: np.ndarray, dtype: ir.DataType | None = None) -> ir.TensorProtocol:
    """``array`` as a tensor named ``name`` (stored as ``dtype``, e.g. INT4, if given): in a
    scratch file inside :func:`spilled_weights` when large, else in memory."""
    tensor = ir.tensor(np.asarray(array, order="C"), dtype=dtype, name=name)  # keeps 0-d arrays 0-d
    folder = _folder.get()
    if folder is None or tensor.nbytes < SPILL_BYTES:
        return tensor
    handle, path = tempfile.mkstemp(dir=folder, suffix=".bin")
    with os.fdopen(handle, "wb") as file:
        tensor.tofile(file)
    return ir.ExternalTensor(os.path.basename(path), 0, tensor.nbytes, tensor.dtype, shape=tensor.shape,
                             name=name, base_dir=folder)


def discard(tensor: ir.TensorProtocol | None) -> None:
    """Unlink ``tensor``'s scratch file, if it has one (a mapping still open keeps its pages)."""
    folder = _folder.get()
    if folder is not None and isinstance(tensor, ir.ExternalTensor) and pathlib.Path(tensor.base_dir) == folder:
        os.unlink(tensor.path)
