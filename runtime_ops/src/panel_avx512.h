// What the AVX-512 panels (VNNI and AMX-INT8) share, included by their translation units.
#pragma once

#include <immintrin.h>

#include "panel_impl.h"

namespace oq {

namespace {

// AddScaledDots (panel_impl.h) in 16-float vectors: sum[r][c] += a_scale[r, g] · w_scale[g, c] ·
// (dots[r][c] + a_offset · w_sum[g, c]); dots 64-byte aligned. Its own function: inlined after the VNNI quad
// loop, GCC hoisted its loads above the loop and spilled accumulators inside it (1B up_proj,
// M = 512: 9.6 -> 12.4 ms in benchmarks/speed.py --part per-op).
template <int R, int P>
__attribute__((noinline)) void AddScaledDotsAvx512(const PanelArgs& p, size_t row, size_t g,
                                                   const int32_t (*dots)[kPanelChannels * P],
                                                   float (*sum)[kPanelChannels * P]) {
  const __m512i a_offset = _mm512_set1_epi32(p.a_offset);
#pragma GCC unroll 2
  for (int j = 0; j < P; ++j) {
    const size_t at = (j * p.groups + g) * kPanelChannels;
    const __m512i offset = _mm512_mullo_epi32(a_offset, _mm512_loadu_si512(p.w_sums + at));
    const __m512 scale = _mm512_loadu_ps(p.w_scales + at);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float* s = sum[r] + j * kPanelChannels;
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_load_si512(dots[r] + j * kPanelChannels), offset));
      const __m512 scales = p.scale_groups ? _mm512_mul_ps(scale, _mm512_set1_ps(TokenScale(p, row + r, g))) : scale;
      _mm512_storeu_ps(s, _mm512_fmadd_ps(dot, scales, _mm512_loadu_ps(s)));
    }
  }
}

}  // namespace

}  // namespace oq
