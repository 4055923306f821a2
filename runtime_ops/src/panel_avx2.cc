// AVX2 QMatMul panels (compiled with -mavx2), tiles of 16 channels.
//  - U8 (4 rows): vpmaddubsw multiplies a broadcast quad of unsigned activations with
//    8 channels x 4 signed weights and adds neighbours into int16; vpaddw sums `int16_steps`
//    quads (exact by the caller's choice) before vpmaddwd by ones widens them into int32.
//  - S16 (3 rows: 12 accumulators and 4 weight vectors stay in registers): the weights are
//    sign-extended to int16 on the fly and vpmaddwd multiplies them with a broadcast quad of
//    int16 activations into lanes of two int32 partial sums per channel, added pairwise
//    (vphaddd) at the end of the group.
#include <immintrin.h>

#include <cstring>

#include "panel_impl.h"

namespace oq {

namespace {

inline __m256i BroadcastQuadU8(const uint8_t* a) {
  int32_t quad;
  std::memcpy(&quad, a, sizeof quad);
  return _mm256_set1_epi32(quad);
}

inline __m256i BroadcastQuadS16(const int16_t* a) {
  long long quad;
  std::memcpy(&quad, a, sizeof quad);
  return _mm256_set1_epi64x(quad);
}

struct DotsU8Avx2 {
  static constexpr int kRows = 4, kPanels = 1;
  template <int R, int P>
  static void Run(const PanelArgs& p, size_t row, size_t g, int32_t (*out)[kPanelChannels]) {
    const uint8_t* a = GroupActivations<uint8_t>(p, row, g);
    const int8_t* w = GroupWeights(p, g);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (size_t q0 = 0; q0 < p.quads; q0 += p.int16_steps) {
      const size_t q1 = q0 + p.int16_steps < p.quads ? q0 + p.int16_steps : p.quads;
      __m256i part[R][2];
      for (int r = 0; r < R; ++r) part[r][0] = part[r][1] = _mm256_setzero_si256();
      for (size_t q = q0; q < q1; ++q) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + q * 64));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + q * 64 + 32));
        for (int r = 0; r < R; ++r) {
          const __m256i av = BroadcastQuadU8(a + r * p.a_stride + q * kQuad);
          part[r][0] = _mm256_add_epi16(part[r][0], _mm256_maddubs_epi16(av, w0));
          part[r][1] = _mm256_add_epi16(part[r][1], _mm256_maddubs_epi16(av, w1));
        }
      }
      for (int r = 0; r < R; ++r) {
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(part[r][0], ones));
        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(part[r][1], ones));
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[r]), acc[r][0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[r] + 8), acc[r][1]);
    }
  }
};

struct DotsS16Avx2 {
  static constexpr int kRows = 3, kPanels = 1;
  template <int R, int P>
  static void Run(const PanelArgs& p, size_t row, size_t g, int32_t (*out)[kPanelChannels]) {
    const int16_t* a = GroupActivations<int16_t>(p, row, g);
    const int8_t* w = GroupWeights(p, g);
    __m256i acc[R][4];  // channels 0-3, 4-7, 8-11, 12-15: two partial sums each
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < 4; ++v) acc[r][v] = _mm256_setzero_si256();
    for (size_t q = 0; q < p.quads; ++q) {
      __m256i wv[4];
      for (int v = 0; v < 4; ++v)
        wv[v] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + q * 64 + v * 16)));
      for (int r = 0; r < R; ++r) {
        const __m256i av = BroadcastQuadS16(a + r * p.a_stride + q * kQuad);
        for (int v = 0; v < 4; ++v) acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(av, wv[v]));
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int half = 0; half < 2; ++half) {  // [c0, c1, c4, c5 | c2, c3, c6, c7] -> c0..c7
        const __m256i sums =
            _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][2 * half], acc[r][2 * half + 1]), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[r] + half * 8), sums);
      }
    }
  }
};

}  // namespace

void PanelU8Avx2(const PanelArgs& args) { RunPanel<DotsU8Avx2>(args); }
void PanelS16Avx2(const PanelArgs& args) { RunPanel<DotsS16Avx2>(args); }

}  // namespace oq
