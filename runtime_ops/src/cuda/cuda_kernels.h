// The oq CUDA kernels as plain C functions on device pointers and a CUDA stream (null: the
// legacy default stream). The ORT ops (cuda_ops.cc) call them with ORT's compute stream, and
// they are exported from the library so that PyTorch can call them through ctypes on a GPU
// machine without onnxruntime-gpu (oqcompile/cuda_kernels.py). Each returns null once the
// work is queued, else "oq.<op> (CUDA): " and CUDA's message or why the arguments cannot run
// (valid until the calling thread's next failure). float16
// selects half-precision X/Y/scales instead of float; other arguments are as in ops.h.
#pragma once

#include <cstdint>

#define OQ_EXPORT extern "C" __attribute__((visibility("default")))

// Y = X · (H_K ⊗ H_m) on rows of n = K · m values; h_k [K, K] float, or null for K = 1 (K ≤ 64).
OQ_EXPORT const char* OqCudaHadamard(const void* x, void* y, int64_t rows, int64_t n, const float* h_k, int64_t k,
                                     int float16, void* stream);

// Per-token codes [rows, channels] int8 and scales [rows] (dynamic, or static_scale if > 0).
OQ_EXPORT const char* OqCudaQuantizePerToken(const void* x, int8_t* codes, void* scales, int64_t rows,
                                             int64_t channels, int64_t bits, float clip, float static_scale,
                                             int float16, void* stream);

// Y [rows, n] = codes [rows, k] x packed weight [n, PackedRowBytes(bits, k)] with token scales
// [rows], weight scales [n, groups] float and bias [n] float or null.
OQ_EXPORT const char* OqCudaQMatMul(const int8_t* codes, const void* token_scales, const uint8_t* weight,
                                    const float* weight_scales, const float* bias, void* y, int64_t rows,
                                    int64_t k, int64_t n, int64_t groups, int64_t bits, int float16, void* stream);
