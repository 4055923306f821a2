"""Float64 arithmetic on whole weights in bounded memory.

Passes form new weights in float64 and store them in the model's float type, so that a
rotation or a folded scale adds one rounding, not many. A float64 copy of a whole weight is
twice its float32 bytes (2 GiB for LLaMA-3's 128256 x 2048 embedding), so row-wise work
runs a chunk of rows at a time (:func:`float64_rows`), and rotations may be given as the
function ``rows -> rows @ R`` (a Hadamard transform through its Kronecker factors is never
formed as a matrix).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["RotationLike", "float64_rows", "right_multiplier"]

CHUNK_ROWS = 1024  # rows per float64 chunk of float64_rows (at 4096 columns, 32 MiB)

RowTransform = Callable[[np.ndarray], np.ndarray]
# An orthogonal R, as a matrix or as the function ``rows -> rows @ R``.
RotationLike = np.ndarray | RowTransform


def right_multiplier(rotation: RotationLike) -> RowTransform:
    """``rows -> rows @ R`` for a :data:`RotationLike`."""
    return rotation if callable(rotation) else (lambda rows: rows @ rotation)


def float64_rows(matrix: np.ndarray, transform: RowTransform, dtype: np.dtype) -> np.ndarray:
    """``transform(matrix)`` for a row-wise ``transform``, formed in float64 ``CHUNK_ROWS`` rows at
    a time and stored as ``dtype``: no float64 copy of the whole matrix ever exists."""
    result = None
    for start in range(0, matrix.shape[0], CHUNK_ROWS):
        chunk = transform(matrix[start:start + CHUNK_ROWS].astype(np.float64))
        if result is None:
            result = np.empty((matrix.shape[0], chunk.shape[1]), dtype)
        result[start:start + CHUNK_ROWS] = chunk
    return result
