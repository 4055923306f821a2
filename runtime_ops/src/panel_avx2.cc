// AVX2 QMatMul panels (compiled with -mavx2), tiles of 16 channels.
//  - U8 (4 rows): vpmaddubsw multiplies a broadcast quad of unsigned activations with
//    8 channels x 4 signed weights and adds neighbours into int16; vpaddw sums `int16_steps`
//    quads (exact by the caller's choice) before vpmaddwd by ones widens them into int32.
//  - S16 (3 rows: 12 accumulators and 4 weight vectors stay in registers): the weights are
//    sign-extended to int16 on the fly and vpmaddwd multiplies them with a broadcast quad of
//    int16 activations into lanes of two int32 partial sums per channel, added pairwise
//    (vphaddd) at the end of the group.
// And the unpacking into the panel layout: 8 x 8 transposes of int32 quads.
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
  static void Run(const PanelArgs& p, size_t row, size_t g, float (*sum)[kPanelChannels]) {
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
    int32_t out[R][kPanelChannels];
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[r]), acc[r][0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[r] + 8), acc[r][1]);
    }
    AddScaledDots<R, P>(p, row, g, out, sum);
  }
};

struct DotsS16Avx2 {
  static constexpr int kRows = 3, kPanels = 1;
  template <int R, int P>
  static void Run(const PanelArgs& p, size_t row, size_t g, float (*sum)[kPanelChannels]) {
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
    int32_t out[R][kPanelChannels];
    for (int r = 0; r < R; ++r) {
      for (int half = 0; half < 2; ++half) {  // [c0, c1, c4, c5 | c2, c3, c6, c7] -> c0..c7
        const __m256i sums =
            _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][2 * half], acc[r][2 * half + 1]), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[r] + half * 8), sums);
      }
    }
    AddScaledDots<R, P>(p, row, g, out, sum);
  }
};

// 8 quads of 8 rows (r[c]: 8 int32 lanes) into quad-major order: out[q] = quad q of rows 0..7.
inline void Transpose8x8(const __m256i (&r)[8], __m256i (&out)[8]) {
  __m256i u[8];
  for (int half = 0; half < 2; ++half) {  // rows 0-3, rows 4-7: 4 x 4 blocks within each 128-bit lane
    const __m256i* v = r + 4 * half;
    const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    u[4 * half + 0] = _mm256_unpacklo_epi64(t0, t2);
    u[4 * half + 1] = _mm256_unpackhi_epi64(t0, t2);
    u[4 * half + 2] = _mm256_unpacklo_epi64(t1, t3);
    u[4 * half + 3] = _mm256_unpackhi_epi64(t1, t3);
  }
  for (int i = 0; i < 4; ++i) {  // u[i] lane L holds quad 4L + i of rows 0-3, u[4 + i] of rows 4-7
    out[i] = _mm256_permute2x128_si256(u[i], u[4 + i], 0x20);
    out[4 + i] = _mm256_permute2x128_si256(u[i], u[4 + i], 0x31);
  }
}

}  // namespace

void TransposeQuadsAvx2(const uint8_t* const* rows, int64_t bits, size_t first, int8_t* lines) {
  const __m256i nibble_flip = _mm256_set1_epi8(8);
  for (size_t chunk = 0; chunk < kTransposeCodes; chunk += 32) {  // 8 quads at a time
    for (int half = 0; half < 2; ++half) {  // channels 0-7, then 8-15
      __m256i r[8], out[8];
      for (int c = 0; c < 8; ++c) {
        const uint8_t* row = rows[8 * half + c];
        if (bits == 8) {
          r[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + first + chunk));
        } else {  // 16 bytes -> 16-bit words holding (low nibble, high nibble) -> sign-extended bytes
          const __m256i words =
              _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + (first + chunk) / 2)));
          const __m256i low = _mm256_and_si256(words, _mm256_set1_epi16(0x000F));
          const __m256i high = _mm256_slli_epi16(_mm256_and_si256(words, _mm256_set1_epi16(0x00F0)), 4);
          const __m256i nibbles = _mm256_or_si256(low, high);
          r[c] = _mm256_sub_epi8(_mm256_xor_si256(nibbles, nibble_flip), nibble_flip);
        }
      }
      Transpose8x8(r, out);
      for (int q = 0; q < 8; ++q) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(lines + (chunk / kQuad + q) * 64 + 32 * half), out[q]);
      }
    }
  }
}

void PanelU8Avx2(const PanelArgs& args) { RunPanel<DotsU8Avx2>(args); }
void PanelS16Avx2(const PanelArgs& args) { RunPanel<DotsS16Avx2>(args); }

}  // namespace oq
