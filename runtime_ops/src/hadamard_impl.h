// The ISA-independent part of oq.Hadamard's row transform (see hadamard_kernels.h), included
// by one translation unit per instruction set: plain loops that the compiler vectorizes with
// the unit's own -m flags. No library code.
#pragma once

#include "hadamard_kernels.h"

namespace oq {

// Internal linkage: each instruction set's unit keeps its own copy (the linker must not pick
// code compiled for AVX2 for the portable path).
namespace {

// x H_m unnormalized for one block of m = 2^j floats, in place: the butterfly stages of
// distance first_half, 2·first_half, ..., m/2 (all log2(m) of them from first_half = 1).
inline void FastWalshHadamard(float* data, int64_t m, int64_t first_half = 1) {
  for (int64_t half = first_half; half < m; half *= 2) {
    for (int64_t start = 0; start < m; start += 2 * half) {
      for (int64_t i = start; i < start + half; ++i) {
        const float a = data[i], b = data[i + half];
        data[i] = a + b;
        data[i + half] = a - b;
      }
    }
  }
}

// The portable loops: the butterflies, and Y[a, :] = Σ_b factor[b, a] · X[b, :] for X, Y [k, m].
struct PlainKernels {
  static void Butterflies(float* data, int64_t m) { FastWalshHadamard(data, m); }
  static void FactorProduct(const float* x, int64_t k, int64_t m, const float* factor, float* y) {
    for (int64_t a = 0; a < k; ++a) {
      float* target = y + a * m;
      for (int64_t j = 0; j < m; ++j) target[j] = 0.0f;
      for (int64_t b = 0; b < k; ++b) {
        const float weight = factor[b * k + a];
        const float* source = x + b * m;
        for (int64_t j = 0; j < m; ++j) target[j] += weight * source[j];
      }
    }
  }
};

// rows [count, k·m] in place: each K-block of m through Kernels::Butterflies, then (k > 1) the
// dense K x K factor (already multiplied by 1/sqrt(m)) by Kernels::FactorProduct, else the
// 1/sqrt(m) scale. scratch holds k·m floats.
template <class Kernels>
inline void TransformRowsImpl(float* rows, int64_t count, int64_t k, int64_t m, const float* factor, float scale,
                              float* scratch) {
  const int64_t n = k * m;
  for (int64_t row = 0; row < count; ++row) {
    float* x = rows + row * n;
    for (int64_t b = 0; b < k; ++b) Kernels::Butterflies(x + b * m, m);
    if (factor == nullptr) {
      for (int64_t i = 0; i < n; ++i) x[i] *= scale;
      continue;
    }
    Kernels::FactorProduct(x, k, m, factor, scratch);
    for (int64_t i = 0; i < n; ++i) x[i] = scratch[i];
  }
}

}  // namespace

}  // namespace oq
