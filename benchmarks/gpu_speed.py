"""GPU speed of the oq CUDA kernels, called from PyTorch through the op library's C entry points.

- ``oq.QMatMul`` (fp16 token scales and output, per-channel weight scales) with int8, int6 and
  int4 weights against cuBLAS fp16 (``torch.matmul``) at M in {1, 16, 2048} tokens and the
  LLaMA-7B/70B shapes (K, N) = (4096, 11008), (11008, 4096), (8192, 28672); also with the
  ``oq.QuantizePerToken`` of the fp16 input in front. The kernel multiplies int8 codes for
  every activation width, so W4A4 runs at the W4 column's speed.
- ``oq.Hadamard`` (fp16, K = 1) on 64 MiB of rows against a device-to-device copy of the same
  bytes (the memory-bound floor) for n = 4096 .. 32768.

Each time is the median of CUDA-event timings of repeated calls after a warm-up; ratios are
within one run. Needs a CUDA GPU and a library built with nvcc (no onnxruntime-gpu).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import torch

import report
from oqcompile import cuda_kernels
from oqcompile.errors import OQError
from oqcompile.quant import pack_codes, qrange

TOKENS = (1, 16, 2048)
SHAPES = ((4096, 11008), (11008, 4096), (8192, 28672))
HADAMARD_SIZES = (4096, 8192, 16384, 32768)


def median_ms(run, repeats: int = 50) -> float:
    """Median milliseconds of ``run()`` on the current stream (CUDA events), after 5 warm-up calls."""
    for _ in range(5):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def packed_weight(k: int, n: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    low, high = qrange(bits)
    codes = np.random.default_rng(bits).integers(low, high + 1, (k, n), dtype=np.int8)
    scales = torch.full((n, 1), 1.0 / (high * np.sqrt(k)), device="cuda")
    return torch.from_numpy(pack_codes(codes, bits)).cuda(), scales


def qmatmul_table() -> str:
    rows = []
    for k, n in SHAPES:
        weight = torch.randn(k, n, device="cuda", dtype=torch.float16) / k**0.5
        packed = {bits: packed_weight(k, n, bits) for bits in (8, 6, 4)}
        for m in TOKENS:
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            cublas = median_ms(lambda: torch.matmul(x, weight))
            row = [f"{m} x {k} x {n}", f"{cublas:.3f}"]
            for bits in (8, 6, 4):
                w, w_scales = packed[bits]
                codes, scales = cuda_kernels.quantize_per_token(x, 8)
                matmul = median_ms(lambda: cuda_kernels.qmatmul(codes, scales, w, w_scales, None, bits))
                fused = median_ms(lambda: cuda_kernels.qmatmul(*cuda_kernels.quantize_per_token(x, 8), w, w_scales,
                                                               None, bits))
                row += [f"{matmul:.3f} ({cublas / matmul:.2f}x)", f"{fused:.3f} ({cublas / fused:.2f}x)"]
            rows.append(row)
    header = ["M x K x N", "cuBLAS fp16 ms"] + [f"{label} W{bits}" for bits in (8, 6, 4)
                                                for label in ("QMatMul", "quantize + QMatMul")]
    return report.markdown_table(header, rows)


def hadamard_table(megabytes: int = 64) -> str:
    rows = []
    for n in HADAMARD_SIZES:
        x = torch.randn(megabytes * 2**20 // (2 * n), n, device="cuda", dtype=torch.float16)
        y = torch.empty_like(x)
        copy = median_ms(lambda: y.copy_(x))
        transform = median_ms(lambda: cuda_kernels.hadamard(x))
        rows.append([n, x.shape[0], f"{copy:.3f}", f"{transform:.3f}", f"{transform / copy:.2f}x"])
    return report.markdown_table(["n", "rows", "copy ms", "oq.Hadamard ms", "time vs copy"], rows)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    if not torch.cuda.is_available():
        print("gpu_speed.py: no CUDA GPU on this machine (torch.cuda.is_available() is False)", file=sys.stderr)
        return 1
    try:
        cuda_kernels.library()
        body = ("### oq.QMatMul against cuBLAS fp16 (times in ms, speed-up in brackets)\n\n" + qmatmul_table()
                + "\n\n### oq.Hadamard (fp16) against a copy of the same bytes, 64 MiB\n\n" + hadamard_table())
    except OQError as error:
        print(f"gpu_speed.py: {error}", file=sys.stderr)
        return 1
    report.write_section("gpu-speed", "GPU speed (benchmarks/gpu_speed.py)", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
