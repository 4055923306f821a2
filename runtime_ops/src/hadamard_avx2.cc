// oq.Hadamard's row transform compiled with -mavx2 -mfma (see hadamard_kernels.h). The first
// three butterfly stages run inside each 8-float vector (the compiler vectorizes the wider
// ones); the dense K x K factor runs in register tiles of 4 output rows x 16 columns
// (8 accumulators, one FMA chain each) for m ≥ 16, 4 x 8 for m = 8. Blocks below 8 floats
// take the portable loops.
#include <immintrin.h>

#include "hadamard_impl.h"

namespace oq {

namespace {

// Y[a0 + a, j0 + 8v] for a < A, v < V, summed over all b.
template <int A, int V>
inline void FactorTile(const float* x, int64_t k, int64_t m, const float* factor, int64_t a0, int64_t j0, float* y) {
  __m256 acc[A][V];
  for (int a = 0; a < A; ++a)
    for (int v = 0; v < V; ++v) acc[a][v] = _mm256_setzero_ps();
  for (int64_t b = 0; b < k; ++b) {
    __m256 source[V];
    for (int v = 0; v < V; ++v) source[v] = _mm256_loadu_ps(x + b * m + j0 + 8 * v);
    for (int a = 0; a < A; ++a) {
      const __m256 weight = _mm256_broadcast_ss(factor + b * k + a0 + a);
      for (int v = 0; v < V; ++v) acc[a][v] = _mm256_fmadd_ps(weight, source[v], acc[a][v]);
    }
  }
  for (int a = 0; a < A; ++a)
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(y + (a0 + a) * m + j0 + 8 * v, acc[a][v]);
}

template <int V>
inline void FactorColumns(const float* x, int64_t k, int64_t m, const float* factor, float* y) {
  for (int64_t j0 = 0; j0 < m; j0 += 8 * V) {
    int64_t a0 = 0;
    for (; a0 + 4 <= k; a0 += 4) FactorTile<4, V>(x, k, m, factor, a0, j0, y);
    for (; a0 < k; ++a0) FactorTile<1, V>(x, k, m, factor, a0, j0, y);
  }
}

// The first three butterfly stages (distances 1, 2, 4) inside each 8-float vector: lane
// permutes, then a + b in the lower and b - a in the upper lane of each pair.
inline __m256 EightPointHadamard(__m256 v) {
  const __m256 negated = _mm256_xor_ps(v, _mm256_set1_ps(-0.0f));
  v = _mm256_addsub_ps(_mm256_permute_ps(v, 0xB1), negated);  // [v0+v1, v0-v1, v2+v3, v2-v3, ...]
  __m256 swapped = _mm256_permute_ps(v, 0x4E);
  v = _mm256_blend_ps(_mm256_add_ps(v, swapped), _mm256_sub_ps(swapped, v), 0xCC);
  swapped = _mm256_permute2f128_ps(v, v, 1);
  return _mm256_blend_ps(_mm256_add_ps(v, swapped), _mm256_sub_ps(swapped, v), 0xF0);
}

struct Avx2Kernels {
  static void Butterflies(float* data, int64_t m) {
    if (m < 8) return FastWalshHadamard(data, m);
    for (int64_t i = 0; i < m; i += 8) _mm256_storeu_ps(data + i, EightPointHadamard(_mm256_loadu_ps(data + i)));
    FastWalshHadamard(data, m, 8);
  }
  static void FactorProduct(const float* x, int64_t k, int64_t m, const float* factor, float* y) {
    if (m >= 16) {
      FactorColumns<2>(x, k, m, factor, y);
    } else if (m == 8) {
      FactorColumns<1>(x, k, m, factor, y);
    } else {
      PlainKernels::FactorProduct(x, k, m, factor, y);
    }
  }
};

}  // namespace

void TransformRowsAvx2(float* rows, int64_t count, int64_t k, int64_t m, const float* factor, float scale,
                       float* scratch) {
  TransformRowsImpl<Avx2Kernels>(rows, count, k, m, factor, scale, scratch);
}

}  // namespace oq
