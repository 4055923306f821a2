// AVX-512 VNNI QMatMul panel (compiled with -mavx512f -mavx512bw -mavx512vnni): vpdpwssd
// multiplies 32 int16 pairs and accumulates them into 16 exact int32 lanes in one instruction.
#include <immintrin.h>

#include "panel_impl.h"

namespace oq {

namespace {

inline int32_t HorizontalSum(__m512i v) {  // (_mm512_reduce_add_epi32 trips GCC 12's -Wmaybe-uninitialized)
  const __m256i half = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(1, 0, 3, 2)));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(sum);
}

struct DotAvx512Vnni {
  static constexpr int kRows = 4, kCols = 4;
  template <int R, int C>
  static void Run(const int16_t* a, const int16_t* w, size_t stride, size_t length, int32_t (*out)[C]) {
    __m512i acc[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
    for (size_t k = 0; k < length; k += 32) {
      __m512i wv[C];
      for (int c = 0; c < C; ++c) wv[c] = _mm512_loadu_si512(w + c * stride + k);
      for (int r = 0; r < R; ++r) {
        const __m512i av = _mm512_loadu_si512(a + r * stride + k);
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpwssd_epi32(acc[r][c], av, wv[c]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) out[r][c] = HorizontalSum(acc[r][c]);
  }
};

}  // namespace

void PanelAvx512Vnni(const PanelArgs& args) { RunPanel<DotAvx512Vnni>(args); }

}  // namespace oq
