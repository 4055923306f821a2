// AVX2 QMatMul panel (compiled with -mavx2): vpmaddwd multiplies 16 int16 pairs and adds
// neighbours into 8 exact int32 lanes; a 4 x 2 tile keeps 8 accumulators in registers.
#include <immintrin.h>

#include "panel_impl.h"

namespace oq {

namespace {

inline int32_t HorizontalSum(__m256i v) {
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(1, 0, 3, 2)));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(sum);
}

struct DotAvx2 {
  static constexpr int kRows = 4, kCols = 2;
  template <int R, int C>
  static void Run(const int16_t* a, const int16_t* w, size_t stride, size_t length, int32_t (*out)[C]) {
    __m256i acc[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_si256();
    for (size_t k = 0; k < length; k += 16) {
      __m256i wv[C];
      for (int c = 0; c < C; ++c) wv[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * stride + k));
      for (int r = 0; r < R; ++r) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + r * stride + k));
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(av, wv[c]));
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) out[r][c] = HorizontalSum(acc[r][c]);
  }
};

}  // namespace

void PanelAvx2(const PanelArgs& args) { RunPanel<DotAvx2>(args); }

}  // namespace oq
