"""The oq CUDA kernels on PyTorch tensors, through the op library's plain C entry points
(``runtime_ops/src/cuda/cuda_kernels.h``), for tests and timings on a GPU machine without
onnxruntime-gpu. Inside ONNX Runtime the same kernels run as the ``oq`` ops of the CUDA
execution provider.

Tensors must be contiguous and on the current CUDA device; the work is queued on PyTorch's
current stream. The math of each op is in ``runtime_ops/src/ops.h``.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from oqcompile.errors import OQError
from oqcompile.runtime import ops_library_path

__all__ = ["available", "hadamard", "library", "qmatmul", "quantize_per_token"]

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_SIGNATURES = {
    "OqCudaHadamard": [_PTR, _PTR, _I64, _I64, _PTR, _I64, ctypes.c_int, _PTR],
    "OqCudaQuantizePerToken": [_PTR, _PTR, _PTR, _I64, _I64, _I64, ctypes.c_float, ctypes.c_float, ctypes.c_int, _PTR],
    "OqCudaQMatMul": [_PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, ctypes.c_int, _PTR],
}


@functools.cache
def library() -> ctypes.CDLL:
    """The op library with its ``OqCuda*`` C entry points typed (:class:`OQError` if it has no CUDA kernels)."""
    library = ctypes.CDLL(str(ops_library_path()))
    if not library.OqHasCudaKernels():
        raise OQError("this oqcompile's op library was built without its CUDA kernels (no nvcc at install time)")
    for name, arguments in _SIGNATURES.items():
        getattr(library, name).argtypes = arguments
        getattr(library, name).restype = ctypes.c_char_p
    return library


def available() -> bool:
    """Whether the op library has CUDA kernels (it may still find no GPU to run them on)."""
    return bool(ctypes.CDLL(str(ops_library_path())).OqHasCudaKernels())


def _call(name: str, *arguments) -> None:
    error = getattr(library(), name)(*arguments)
    if error is not None:
        raise OQError(error.decode())


def _pointer(tensor: torch.Tensor | None, *dtypes: torch.dtype, elements: int | None = None) -> int | None:
    """The device address of a contiguous CUDA tensor of one of ``dtypes`` (and ``elements`` values), else OQError."""
    if tensor is None:
        return None
    if not (tensor.is_cuda and tensor.is_contiguous() and tensor.dtype in dtypes):
        raise OQError(f"expected a contiguous CUDA tensor of {' or '.join(map(str, dtypes))}, got {tensor.dtype} "
                      f"on {tensor.device}")
    if elements is not None and tensor.numel() != elements:
        raise OQError(f"expected {elements} values, got a tensor of shape {tuple(tensor.shape)}")
    return tensor.data_ptr()


_FLOATS = (torch.float32, torch.float16)


def _stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def hadamard(x: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
    """``oq.Hadamard``: ``x · (H_K ⊗ H_m)`` on the last axis; ``factor`` is ``H_K`` (float32), ``None`` for K = 1."""
    y = torch.empty_like(x)
    k = 1 if factor is None else factor.shape[0]
    _call("OqCudaHadamard", _pointer(x, *_FLOATS), _pointer(y, *_FLOATS), x.numel() // x.shape[-1], x.shape[-1],
          _pointer(factor, torch.float32, elements=k * k), k, int(x.dtype == torch.float16), _stream())
    return y


def quantize_per_token(x: torch.Tensor, bits: int, clip: float = 1.0,
                       static_scale: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``oq.QuantizePerToken``: int8 codes like ``x`` and scales ``[..., 1]`` of x's type."""
    codes = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    scales = torch.empty((*x.shape[:-1], 1), dtype=x.dtype, device=x.device)
    _call("OqCudaQuantizePerToken", _pointer(x, *_FLOATS), codes.data_ptr(), scales.data_ptr(),
          x.numel() // x.shape[-1], x.shape[-1], bits, clip, static_scale, int(x.dtype == torch.float16), _stream())
    return codes, scales


def qmatmul(codes: torch.Tensor, token_scales: torch.Tensor, weight: torch.Tensor, weight_scales: torch.Tensor,
            bias: torch.Tensor | None, bits: int) -> torch.Tensor:
    """``oq.QMatMul``: ``[..., K]`` codes times packed weights ``[N, B]`` (``oqcompile.quant.pack_codes``)
    with weight scales ``[N, G]``; the output has the token scales' type."""
    k, n, rows = codes.shape[-1], weight.shape[0], codes.numel() // codes.shape[-1]
    row_bytes = {8: k, 6: (k + 3) // 4 * 3, 4: (k + 1) // 2}.get(bits)
    if row_bytes is None:
        raise OQError(f"bits must be 8, 6 or 4, not {bits}")
    if weight.dim() != 2 or weight.shape[1] != row_bytes or weight_scales.dim() != 2 or weight_scales.shape[0] != n:
        raise OQError(f"int{bits} weights for K = {k} must be [N, {row_bytes}] uint8 with scales [N, G], got "
                      f"{tuple(weight.shape)} and {tuple(weight_scales.shape)}")
    y = torch.empty((*codes.shape[:-1], n), dtype=token_scales.dtype, device=codes.device)
    _call("OqCudaQMatMul", _pointer(codes, torch.int8), _pointer(token_scales, *_FLOATS, elements=rows),
          _pointer(weight, torch.uint8), _pointer(weight_scales, torch.float32), _pointer(bias, torch.float32, elements=n),
          y.data_ptr(), rows, k, n, weight_scales.shape[1], bits, int(token_scales.dtype == torch.float16), _stream())
    return y
