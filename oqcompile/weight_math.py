"""Wide-float arithmetic on whole weights in bounded memory.

Passes form new weights in a float wider than the one they are stored in and then store them,
so that a rotation or a folded scale adds one rounding, not many: float64 for float32 weights,
float32 for float16/bfloat16 ones (float32's rounding, 2^-24, is 2^13 times finer than
float16's, and its products run twice as fast). A float64 copy of a whole weight is twice its
float32 bytes (2 GiB for LLaMA-3's 128256 x 2048 embedding), so row-wise work runs a chunk of
rows at a time (:func:`wide_rows`), and rotations may be given as the function
``rows -> rows @ R`` (a Hadamard transform through its Kronecker factors is never formed as a
matrix).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable

import numpy as np

__all__ = ["RotationLike", "right_multiplier", "wide_rows", "wide_type"]

CHUNK_ROWS = 1024  # rows per chunk of wide_rows (float64 at 4096 columns: 32 MiB)
WORKERS = min(4, len(os.sched_getaffinity(0)))  # chunks formed at once: a few wide chunks in memory

RowTransform = Callable[[np.ndarray], np.ndarray]
# An orthogonal R, as a matrix or as the function ``rows -> rows @ R``.
RotationLike = np.ndarray | RowTransform


def right_multiplier(rotation: RotationLike) -> RowTransform:
    """``rows -> rows @ R`` for a :data:`RotationLike`."""
    return rotation if callable(rotation) else (lambda rows: rows @ rotation)


def wide_type(dtype: np.dtype) -> type[np.floating]:
    """The float that results stored as ``dtype`` are formed in: float64, or float32 for 16-bit floats."""
    return np.float32 if np.dtype(dtype).itemsize <= 2 else np.float64


def wide_rows(matrix: np.ndarray, transform: RowTransform, dtype: np.dtype) -> np.ndarray:
    """``transform(matrix)`` for a row-wise ``transform``, formed in ``wide_type(dtype)``
    ``CHUNK_ROWS`` rows at a time and stored as ``dtype``: no wide copy of the whole matrix exists.
    Chunks run on up to ``WORKERS`` threads (NumPy releases the GIL in their copies and products);
    each is formed alone, so the result does not depend on how many run at once."""
    def formed(start: int) -> np.ndarray:
        return transform(matrix[start:start + CHUNK_ROWS].astype(wide_type(dtype)))

    first = formed(0)
    result = np.empty((matrix.shape[0], first.shape[1]), dtype)
    result[:CHUNK_ROWS] = first

    def store(start: int) -> None:
        result[start:start + CHUNK_ROWS] = formed(start)

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(store, range(CHUNK_ROWS, matrix.shape[0], CHUNK_ROWS)))
    return result

