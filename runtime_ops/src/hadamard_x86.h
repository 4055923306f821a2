// oq.Hadamard's vector kernels (see hadamard_kernels.h), included by the AVX2 and the AVX-512
// units, each compiled with its own -m flags (both with AVX2 and FMA):
//  - the butterflies: the first stages inside each vector (3 in Ymm, 4 in Zmm), the wider ones
//    three at a time on 8 vectors held in registers (one pass over the block per three stages, not
//    per stage), the copy and the scale riding in the first pass;
//  - the dense K x K factor, in register tiles of 4 output rows x 2 vectors (8 accumulators,
//    one FMA chain each) over a vector type Vec (Ymm here; the AVX-512 unit adds Zmm), narrower
//    blocks taking the narrower tiles (4 x 32 tiles of Ymm spill, 2 x 32 measured slower).
// Blocks below 8 floats take the portable loops. No library code.
#pragma once

#include <immintrin.h>

#include "hadamard_impl.h"

namespace oq {

namespace {  // internal linkage: each instruction set's unit keeps its own copy

struct Ymm {
  using Type = __m256;
  static constexpr int kLanes = 8;
  static Type Zero() { return _mm256_setzero_ps(); }
  static Type Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, Type v) { _mm256_storeu_ps(p, v); }
  static Type Broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static Type MultiplyAdd(Type a, Type b, Type c) { return _mm256_fmadd_ps(a, b, c); }
  static Type Add(Type a, Type b) { return _mm256_add_ps(a, b); }
  static Type Subtract(Type a, Type b) { return _mm256_sub_ps(a, b); }
  static Type Multiply(Type a, Type b) { return _mm256_mul_ps(a, b); }
  static Type Set(float value) { return _mm256_set1_ps(value); }
  // The first three butterfly stages (distances 1, 2, 4) inside the vector: lane permutes,
  // then a + b in the lower and b - a in the upper lane of each pair.
  static Type LanesHadamard(Type v) {
    const Type negated = _mm256_xor_ps(v, _mm256_set1_ps(-0.0f));
    v = _mm256_addsub_ps(_mm256_permute_ps(v, 0xB1), negated);  // [v0+v1, v0-v1, v2+v3, v2-v3, ...]
    Type swapped = _mm256_permute_ps(v, 0x4E);
    v = _mm256_blend_ps(_mm256_add_ps(v, swapped), _mm256_sub_ps(swapped, v), 0xCC);
    swapped = _mm256_permute2f128_ps(v, v, 1);
    return _mm256_blend_ps(_mm256_add_ps(v, swapped), _mm256_sub_ps(swapped, v), 0xF0);
  }
};

// Y[a0 + a, j0 + lanes · v] for a < A, v < V, summed over all b.
template <class Vec, int A, int V>
inline void FactorTile(const float* x, int64_t k, int64_t m, const float* factor, int64_t a0, int64_t j0, float* y) {
  typename Vec::Type acc[A][V];
  for (int a = 0; a < A; ++a)
    for (int v = 0; v < V; ++v) acc[a][v] = Vec::Zero();
  for (int64_t b = 0; b < k; ++b) {
    typename Vec::Type source[V];
    for (int v = 0; v < V; ++v) source[v] = Vec::Load(x + b * m + j0 + Vec::kLanes * v);
    for (int a = 0; a < A; ++a) {
      const typename Vec::Type weight = Vec::Broadcast(factor + b * k + a0 + a);
      for (int v = 0; v < V; ++v) acc[a][v] = Vec::MultiplyAdd(weight, source[v], acc[a][v]);
    }
  }
  for (int a = 0; a < A; ++a)
    for (int v = 0; v < V; ++v) Vec::Store(y + (a0 + a) * m + j0 + Vec::kLanes * v, acc[a][v]);
}

template <class Vec, int V>
inline void FactorColumns(const float* x, int64_t k, int64_t m, const float* factor, float* y) {
  for (int64_t j0 = 0; j0 < m; j0 += Vec::kLanes * V) {
    int64_t a0 = 0;
    for (; a0 + 4 <= k; a0 += 4) FactorTile<Vec, 4, V>(x, k, m, factor, a0, j0, y);
    for (; a0 < k; ++a0) FactorTile<Vec, 1, V>(x, k, m, factor, a0, j0, y);
  }
}

// The butterfly stages of distances d, 2d, ..., 2^(S-1) d (d a multiple of the vector width)
// in one pass: 2^S vectors at distance d stay in registers through all S stages. The stages
// act on different bits of the index, so they commute and can be grouped in any order.
template <class Vec, int S>
inline void ButterflyPass(float* data, int64_t m, int64_t d) {
  constexpr int P = 1 << S;
  for (int64_t start = 0; start < m; start += P * d) {
    for (int64_t i = start; i < start + d; i += Vec::kLanes) {
      typename Vec::Type v[P];
      for (int j = 0; j < P; ++j) v[j] = Vec::Load(data + i + j * d);
      for (int h = 1; h < P; h *= 2) {
        for (int j = 0; j < P; ++j) {
          if (j & h) continue;
          const typename Vec::Type a = v[j], b = v[j + h];
          v[j] = Vec::Add(a, b);
          v[j + h] = Vec::Subtract(a, b);
        }
      }
      for (int j = 0; j < P; ++j) Vec::Store(data + i + j * d, v[j]);
    }
  }
}

template <class Vec>
struct X86Kernels {
  static void Butterflies(const float* source, float* target, int64_t m, float scale) {
    if (m < Vec::kLanes) {
      if constexpr (Vec::kLanes > Ymm::kLanes) return X86Kernels<Ymm>::Butterflies(source, target, m, scale);
      return PlainKernels::Butterflies(source, target, m, scale);
    }
    const typename Vec::Type scales = Vec::Set(scale);
    for (int64_t i = 0; i < m; i += Vec::kLanes) {
      Vec::Store(target + i, Vec::LanesHadamard(Vec::Multiply(scales, Vec::Load(source + i))));
    }
    int64_t d = Vec::kLanes;  // then the distances kLanes ... m/2
    for (; d * 8 <= m; d *= 8) ButterflyPass<Vec, 3>(target, m, d);
    if (d * 4 <= m) {
      ButterflyPass<Vec, 2>(target, m, d);
    } else if (d * 2 <= m) {
      ButterflyPass<Vec, 1>(target, m, d);
    }
  }
  static void FactorProduct(const float* x, int64_t k, int64_t m, const float* factor, float* y) {
    if (m >= 2 * Vec::kLanes) {
      FactorColumns<Vec, 2>(x, k, m, factor, y);
    } else if (m == Vec::kLanes) {
      FactorColumns<Vec, 1>(x, k, m, factor, y);
    } else if constexpr (Vec::kLanes > Ymm::kLanes) {
      X86Kernels<Ymm>::FactorProduct(x, k, m, factor, y);
    } else {
      PlainKernels::FactorProduct(x, k, m, factor, y);
    }
  }
};

}  // namespace

}  // namespace oq
