"""Quantization math shared by the passes: integer ranges, weight RTN with clip search, GPTQ.

Codes are signed and symmetric around zero: a ``b``-bit code lies in
``[-2^(b-1), 2^(b-1) - 1]`` and ``x ≈ scale · code`` with

    scale = clip · absmax / (2^(b-1) - 1)

(``clip`` ≤ 1 trades clipping error for rounding error; values beyond ``clip · absmax``
saturate). 6-bit codes live in an int8 container clipped to ``[-32, 31]``, 4-bit codes in
ONNX INT4.

Weights are ``[in, out]`` (ONNX ``MatMul`` layout). A weight is quantized per output
channel (one scale per column) or in groups of ``group`` consecutive input rows per
column (scales ``[in / group, out]``), which is exactly ``DequantizeLinear(axis=0,
block_size=group)`` on the stored codes.

GPTQ (Frantar et al., 2023) quantizes the input rows one at a time and spreads each
row's rounding error over the rows not yet quantized, weighted by the inverse Hessian
``H = 2 XᵀX`` of the layer's calibration inputs ``X``; it minimizes ``‖X W - X Ŵ‖²``
rather than ``‖W - Ŵ‖²``. Scales (and groups) are fixed before the sweep from the
original weight, so groups stay contiguous in the stored order even with act-order.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np

__all__ = ["ACTIVATION_CLIP_GRID", "BITS", "QuantizedWeight", "check_bits", "code_bits", "fake_quantize_per_token",
           "gptq", "pack_codes", "pack_matmulnbits", "qmax", "qrange", "rtn", "search_activation_clip", "weight_scales"]

CLIP_GRID = np.linspace(1.0, 0.75, 26)  # shrink ratios tried by the weight clip search
CLIP_NORM = 2.4  # error norm of the clip search (QuaRot/GPTQ use 2.4: between MSE and max error)
ACTIVATION_CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)


def qrange(bits: int) -> tuple[int, int]:
    """The signed code range of ``bits`` bits: ``(-2^(b-1), 2^(b-1) - 1)``."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


BITS = (4, 6, 8)  # the code widths oqcompile writes and the oq ops run


def code_bits(codes: np.ndarray) -> int:
    """The narrowest of :data:`BITS` whose range holds every one of ``codes``."""
    low, high = int(codes.min(initial=0)), int(codes.max(initial=0))
    return next(b for b in BITS if qrange(b)[0] <= low and high <= qrange(b)[1])


def check_bits(what: str, *widths: int | None) -> None:
    """Raise ``ValueError`` unless every one of ``widths`` that is set (not None) is in :data:`BITS`."""
    given = [bits for bits in widths if bits is not None]
    if any(bits not in BITS for bits in given):
        raise ValueError(f"{what} bits must be 4, 6 or 8, not {'/'.join(map(str, given))}")


@dataclasses.dataclass
class QuantizedWeight:
    """``[in, out]`` integer codes with scales ``[groups, out]`` (``groups = in / group`` or 1)."""

    codes: np.ndarray  # int8, values inside qrange(bits)
    scales: np.ndarray  # float64
    bits: int
    group: int | None  # None: one scale per output channel

    def expanded_scales(self) -> np.ndarray:
        """Scales broadcast to the ``[in, out]`` shape of the codes."""
        rows = self.codes.shape[0] if self.group is None else self.group
        return np.repeat(self.scales, rows, axis=0)

    def dequantize(self) -> np.ndarray:
        return self.codes.astype(np.float64) * self.expanded_scales()


def _grouped_absmax(weight: np.ndarray, group: int | None) -> np.ndarray:
    rows, cols = weight.shape
    if group is None:
        return np.abs(weight).max(axis=0, keepdims=True)
    if rows % group:
        raise ValueError(f"group size {group} does not divide the {rows} input rows")
    return np.abs(weight).reshape(rows // group, group, cols).max(axis=1)


def _round(values: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    low, high = qrange(bits)
    return np.clip(np.rint(values / scales), low, high)


def weight_scales(weight: np.ndarray, bits: int, group: int | None = None,
                  clip_search: bool = False) -> np.ndarray:
    """Scales ``[groups, out]``; with ``clip_search`` each chooses the shrink ratio from
    :data:`CLIP_GRID` that minimizes ``Σ|w - ŵ|^2.4`` over its rows."""
    absmax = np.maximum(_grouped_absmax(weight, group), 1e-12)
    if not clip_search:
        return absmax / qmax(bits)
    rows = weight.shape[0] if group is None else group
    grouped = weight.reshape(-1, rows, weight.shape[1])  # [groups, rows, out]
    best_scales, best_error = None, None
    for ratio in CLIP_GRID:
        scales = ratio * absmax / qmax(bits)
        broadcast = scales[:, None, :]
        error = (np.abs(grouped - _round(grouped, broadcast, bits) * broadcast) ** CLIP_NORM).sum(axis=1)
        if best_scales is None:
            best_scales, best_error = scales, error
        else:
            better = error < best_error
            best_scales = np.where(better, scales, best_scales)
            best_error = np.where(better, error, best_error)
    return best_scales


RTN_COLUMNS = 2048  # output channels per float64 chunk of weight_scales (at 8192 inputs, 128 MiB)


def rtn(weight: np.ndarray, bits: int, group: int | None = None,
        clip_search: bool = False) -> QuantizedWeight:
    """Round-to-nearest quantization of an ``[in, out]`` weight.

    Output channels are independent, so they are quantized ``RTN_COLUMNS`` at a time, a chunk
    per core (NumPy's element-wise loops release the GIL): the float64 temporaries stay small
    even for a vocabulary-wide lm_head.
    """
    rows = weight.shape[0] if group is None else group
    codes = np.empty(weight.shape, np.int8)

    def quantize(start: int) -> np.ndarray:
        columns = weight[:, start:start + RTN_COLUMNS].astype(np.float64)
        scales = weight_scales(columns, bits, group, clip_search)
        codes[:, start:start + RTN_COLUMNS] = _round(columns, np.repeat(scales, rows, axis=0), bits)
        return scales

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        scales = list(pool.map(quantize, range(0, weight.shape[1], RTN_COLUMNS)))
    return QuantizedWeight(codes, np.concatenate(scales, axis=1), bits, group)


def gptq(weight: np.ndarray, gram: np.ndarray, bits: int, group: int | None = None,
         damp: float = 0.01, act_order: bool = False, clip_search: bool = False,
         block: int = 128, consume_gram: bool = False) -> QuantizedWeight:
    """GPTQ of an ``[in, out]`` weight given the calibration Gram matrix ``XᵀX`` (``[in, in]``).

    ``damp`` adds ``damp · mean(diag H)`` to the diagonal; ``act_order`` sweeps the input
    rows in order of decreasing ``diag H`` (largest activations first). Inputs never seen
    (``H_ii = 0``) get ``H_ii = 1`` and zero weights. Output channels are independent given
    ``H``, so they are swept ``RTN_COLUMNS`` at a time with one factor of ``H⁻¹``: besides its
    arguments the function holds that ``[in, in]`` float64 factor and a float64 chunk of
    columns (at an 8B model's 14336-input down projection, 1.5 GiB and 0.2 GiB). With
    ``consume_gram`` (the caller's last use of ``gram``) and no act-order, the factor is formed
    in ``gram``'s own memory instead of a copy: ``J H J`` of a C-contiguous matrix is its flat
    buffer reversed.
    """
    rows = weight.shape[0]
    diagonal = np.diag(gram).copy()
    dead = diagonal == 0
    order = np.argsort(-diagonal, kind="stable") if act_order else np.arange(rows)
    reversed_order = order[::-1]
    if consume_gram and not act_order and gram.dtype == np.float64 and gram.flags.c_contiguous:
        hessian = gram
        _reverse_in_place(hessian)  # J H J, sweep order
    else:
        hessian = gram[np.ix_(reversed_order, reversed_order)].astype(np.float64, copy=False)  # J H J, sweep order
    swept_diagonal = np.where(dead[reversed_order], 1.0, np.diag(hessian))
    hessian[np.diag_indices(rows)] = swept_diagonal + damp * np.mean(swept_diagonal)
    inverse_factor = _upper_factor_of_inverse(hessian)  # row i: the error-propagation weights of row i
    del hessian  # its memory now holds the factor
    codes, scales = np.empty(weight.shape, np.int8), []
    for start in range(0, weight.shape[1], RTN_COLUMNS):
        columns = weight[:, start:start + RTN_COLUMNS].astype(np.float64)
        columns[dead, :] = 0.0
        scales.append(weight_scales(columns, bits, group, clip_search))
        row_scales = np.repeat(scales[-1], rows if group is None else group, axis=0)
        codes[order, start:start + RTN_COLUMNS] = _sweep(columns[order], row_scales[order], inverse_factor, bits,
                                                         block)
    return QuantizedWeight(codes, np.concatenate(scales, axis=1), bits, group)


def _sweep(work: np.ndarray, row_scales: np.ndarray, inverse_factor: np.ndarray, bits: int,
           block: int) -> np.ndarray:
    """GPTQ's sweep over the rows of ``work`` (in sweep order, overwritten): quantize row ``i``
    and spread its error over the later rows with row ``i`` of ``R`` (``RᵀR = H⁻¹``), lazily,
    ``block`` rows at a time."""
    rows = work.shape[0]
    codes = np.empty(work.shape, np.int8)
    low, high = qrange(bits)
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        chunk = work[start:stop].copy()
        errors = np.zeros_like(chunk)
        factor = inverse_factor[start:stop, start:stop]
        for i in range(stop - start):
            row = chunk[i]
            code = np.clip(np.rint(row / row_scales[start + i]), low, high)
            codes[start + i] = code
            error = (row - code * row_scales[start + i]) / factor[i, i]
            chunk[i:] -= np.outer(factor[i, i:], error)
            errors[i] = error
        work[stop:] -= inverse_factor[start:stop, stop:].T @ errors
    return codes


def _upper_factor_of_inverse(reversed_hessian: np.ndarray) -> np.ndarray:
    """The upper triangular ``R`` with ``RᵀR = H⁻¹``, given ``JHJ`` (``H`` symmetric positive
    definite, ``J`` the order-reversing permutation), computed in the memory of its argument.

    Without forming ``H⁻¹``: the Cholesky factor ``L`` of ``JHJ`` gives ``H = VVᵀ`` with
    ``V = JLJ`` upper triangular, so ``H⁻¹ = V⁻ᵀV⁻¹`` and ``R = V⁻¹`` (positive diagonal, hence
    the Cholesky factor of ``H⁻¹``). LAPACK factors and inverts triangles in place
    (``potrf``, ``trtri``: ``2n³/3`` flops, against ``7n³/3`` for inverting ``H`` and factoring
    the inverse), and ``J·J`` of a row-major matrix is its flat buffer reversed. The returned
    array is a transposed view of the argument's buffer.
    """
    from scipy.linalg import lapack

    column_major = reversed_hessian.T  # the same buffer (and, H being symmetric, the same matrix)
    _, info = lapack.dpotrf(column_major, lower=1, clean=1, overwrite_a=1)  # buffer: Lᵀ, row-major
    if info:
        raise np.linalg.LinAlgError(f"GPTQ Hessian is not positive definite (potrf info {info})")
    _reverse_in_place(reversed_hessian)  # buffer: (JLJ)ᵀ = Vᵀ, row-major: V column-major
    _, info = lapack.dtrtri(column_major, lower=0, overwrite_c=1)  # buffer: V⁻¹ = R, column-major
    if info:
        raise np.linalg.LinAlgError(f"GPTQ Hessian factor is singular (trtri info {info})")
    return column_major


def _reverse_in_place(matrix: np.ndarray, step: int = 1 << 20) -> None:
    """Reverse the flat buffer of a C-contiguous ``matrix`` (both axes), a ``step`` at a time."""
    flat = matrix.reshape(-1)
    size = flat.size
    for low in range(0, size // 2, step):
        high = min(low + step, size // 2)
        head = flat[low:high].copy()
        flat[low:high] = flat[size - high:size - low][::-1]
        flat[size - high:size - low] = head[::-1]


def pack_matmulnbits(weight: QuantizedWeight) -> tuple[np.ndarray, np.ndarray]:
    """ORT ``MatMulNBits`` (4 bits) inputs ``B`` and ``scales`` for a grouped 4-bit weight.

    ``B`` is ``uint8 [N, K / block, block / 2]``: per output column ``n`` and block, the
    unsigned codes ``u = q + 8`` two per byte, the even row in the low nibble. ``scales``
    is ``[N · K / block]`` (column-major over blocks). Zero points are left out: ORT's
    default for 4 bits is 8, which makes the codes symmetric again.
    """
    if weight.bits != 4 or weight.group is None or weight.group % 2:
        raise ValueError("MatMulNBits needs 4-bit codes in groups of an even size")
    rows, cols = weight.codes.shape
    unsigned = (weight.codes.astype(np.int16) + 8).astype(np.uint8).T.reshape(cols, rows // weight.group,
                                                                              weight.group)
    packed = unsigned[..., 0::2] | (unsigned[..., 1::2] << 4)
    return np.ascontiguousarray(packed), np.ascontiguousarray(weight.scales.T).reshape(-1)


PACK_CHANNELS = 1024  # output channels packed at a time: int32 temporaries of 4 bytes per code


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """``oq.QMatMul``'s packed weight: ``uint8 [N, B]`` from integer codes ``[K, N]``.

    Row ``n`` holds the codes of output channel ``n`` in two's complement: 8 bits one per
    byte (``B = K``); 4 bits two per byte, the even input channel in the low nibble
    (``B = ceil(K / 2)``); 6 bits four per three bytes as the little-endian 24-bit word
    ``q0 | q1 << 6 | q2 << 12 | q3 << 18`` (``B = 3 ceil(K / 4)``). ``K`` is zero-padded.
    ``PACK_CHANNELS`` rows are packed at a time, so a vocabulary-wide lm_head needs no
    temporaries of its own size.
    """
    low, high = qrange(bits)
    if codes.min(initial=0) < low or codes.max(initial=0) > high:
        raise ValueError(f"codes outside the {bits}-bit range [{low}, {high}]")
    in_features, out_features = codes.shape
    per_word = {8: 1, 4: 2, 6: 4}[bits]
    word_bytes = bits * per_word // 8
    packed = np.empty((out_features, -(-in_features // per_word) * word_bytes), np.uint8)
    for start in range(0, out_features, PACK_CHANNELS):
        rows = codes[:, start:start + PACK_CHANNELS].T.astype(np.int32)
        padded = np.pad(rows, ((0, 0), (0, -in_features % per_word))) & ((1 << bits) - 1)
        words = (padded.reshape(rows.shape[0], -1, per_word) << (bits * np.arange(per_word, dtype=np.int32))).sum(
            axis=-1, dtype=np.int32)
        byte_values = (words[..., None] >> (8 * np.arange(word_bytes, dtype=np.int32))) & 0xFF
        packed[start:start + PACK_CHANNELS] = byte_values.reshape(rows.shape[0], -1)
    return packed


def fake_quantize_per_token(x: np.ndarray, bits: int, clip: float = 1.0, group: int | None = None) -> np.ndarray:
    """``x`` (``[tokens, channels]``) through symmetric per-token quantization and back, one
    scale per ``group`` channels of a token (``None``: per token)."""
    grouped = x.reshape(*x.shape[:-1], -1, group or x.shape[-1])
    scales = np.maximum(clip * np.abs(grouped).max(axis=-1, keepdims=True) / qmax(bits), np.finfo(np.float32).tiny)
    return (_round(grouped, scales, bits) * scales).reshape(x.shape)


def search_activation_clip(sample: np.ndarray, weight: np.ndarray, bits: int,
                           group: int | None = None) -> tuple[float, float]:
    """The per-token clip ratio from :data:`ACTIVATION_CLIP_GRID` that minimizes the output
    error ``‖(Q_c(X) - X) W‖²`` of a layer on sampled inputs ``X``; returns ``(clip, relative error)``."""
    x = sample.astype(np.float64)
    reference = np.linalg.norm(x @ weight)
    errors = [np.linalg.norm((fake_quantize_per_token(x, bits, clip, group) - x) @ weight)
              for clip in ACTIVATION_CLIP_GRID]
    best = int(np.argmin(errors))
    return ACTIVATION_CLIP_GRID[best], float(errors[best] / max(reference, 1e-30))
