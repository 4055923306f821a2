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
// distance 1, 2, ..., m/2.
inline void FastWalshHadamard(float* data, int64_t m) {
  for (int64_t half = 1; half < m; half *= 2) {
    for (int64_t start = 0; start < m; start += 2 * half) {
      for (int64_t i = start; i < start + half; ++i) {
        const float a = data[i], b = data[i + half];
        data[i] = a + b;
        data[i + half] = a - b;
      }
    }
  }
}

// The portable loops: the butterflies of scale · source into target, and
// Y[a, :] = Σ_b factor[b, a] · X[b, :] for X, Y [k, m].
struct PlainKernels {
  static void Butterflies(const float* source, float* target, int64_t m, float scale) {
    for (int64_t i = 0; i < m; ++i) target[i] = scale * source[i];
    FastWalshHadamard(target, m);
  }
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

// Rows [count, k·m] of `in` into `out`: each K-block of m through Kernels::Butterflies (scaled
// by 1/sqrt(m) without a factor), then (k > 1) the dense K x K factor (already multiplied by
// 1/sqrt(m)) by Kernels::FactorProduct into scratch (k·m floats) and back. (The butterflies
// write the output row in order first: the factor's scattered stores into a row not yet in
// cache measured 1.3x slower at n = 14336.)
template <class Kernels>
inline void TransformRowsImpl(const float* in, float* out, int64_t count, int64_t k, int64_t m, const float* factor,
                              float scale, float* scratch) {
  const int64_t n = k * m;
  for (int64_t row = 0; row < count; ++row) {
    const float* x = in + row * n;
    float* y = out + row * n;
    for (int64_t b = 0; b < k; ++b) Kernels::Butterflies(x + b * m, y + b * m, m, factor == nullptr ? scale : 1.0f);
    if (factor == nullptr) continue;
    Kernels::FactorProduct(y, k, m, factor, scratch);
    for (int64_t i = 0; i < n; ++i) y[i] = scratch[i];
  }
}

}  // namespace

}  // namespace oq
