// oq.Hadamard's row transform compiled with -mavx2 -mfma (see hadamard_rows.h). The dense
// K x K factor runs in register tiles of 4 output rows x 16 columns (8 accumulators, one FMA
// chain each) for m ≥ 16, 4 x 8 for m = 8; smaller blocks take the portable loops.
#include <immintrin.h>

#include "hadamard_rows.h"

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

struct Avx2FactorProduct {
  static void Run(const float* x, int64_t k, int64_t m, const float* factor, float* y) {
    if (m >= 16) {
      FactorColumns<2>(x, k, m, factor, y);
    } else if (m == 8) {
      FactorColumns<1>(x, k, m, factor, y);
    } else {
      PlainFactorProduct::Run(x, k, m, factor, y);
    }
  }
};

}  // namespace

void TransformRowsAvx2(float* rows, int64_t count, int64_t k, int64_t m, const float* factor, float scale,
                       float* scratch) {
  TransformRowsImpl<Avx2FactorProduct>(rows, count, k, m, factor, scale, scratch);
}

}  // namespace oq
