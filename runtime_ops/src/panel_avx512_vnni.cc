// AVX-512 VNNI QMatMul panel (compiled with -mavx512f -mavx512bw -mavx512vnni): vpdpbusd
// multiplies a broadcast quad of unsigned activations with 16 channels x 4 signed weights and
// adds the four products into 16 int32 lanes without intermediate saturation, so every
// activation range is exact in one instruction per quad. A tile is 8 rows by two panels
// (32 channels): per quad, two weight loads and 8 broadcasts feed 16 vpdpbusd. And the
// unpacking into the panel layout: a 16 x 16 transpose of int32 quads.
#include <immintrin.h>

#include <cstring>

#include "panel_avx512.h"

namespace oq {

namespace {

struct DotsU8Avx512Vnni {
  static constexpr int kRows = 8, kPanels = 2;
  template <int R, int P>
  static void Run(const PanelArgs& p, size_t row, size_t g, float (*sum)[kPanelChannels * P]) {
    const uint8_t* a = GroupActivations<uint8_t>(p, row, g);
    const int8_t* w[P];
#pragma GCC unroll 2
    for (int j = 0; j < P; ++j) w[j] = GroupWeights(p, g, j);
    __m512i acc[R][P];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
      for (int j = 0; j < P; ++j) acc[r][j] = _mm512_setzero_si512();
    for (size_t q = 0; q < p.quads; ++q) {
      __m512i wv[P];
#pragma GCC unroll 2
      for (int j = 0; j < P; ++j) wv[j] = _mm512_loadu_si512(w[j] + q * 64);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        int32_t quad;
        std::memcpy(&quad, a + r * p.a_stride + q * kQuad, sizeof quad);
        const __m512i av = _mm512_set1_epi32(quad);
#pragma GCC unroll 2
        for (int j = 0; j < P; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], av, wv[j]);
      }
    }
    alignas(64) int32_t dots[R][kPanelChannels * P];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
      for (int j = 0; j < P; ++j) _mm512_store_si512(dots[r] + j * kPanelChannels, acc[r][j]);
    AddScaledDotsAvx512<R, P>(p, row, g, dots, sum);
  }
};

}  // namespace

void TransposeQuadsAvx512(const uint8_t* const* rows, int64_t bits, size_t first, int8_t* lines) {
  const __m512i nibble_flip = _mm512_set1_epi8(8);
  __m512i r[16];  // r[c]: 64 codes of row c, one int32 quad per lane
  for (int c = 0; c < 16; ++c) {
    if (bits == 8) {
      r[c] = _mm512_loadu_si512(rows[c] + first);
    } else {  // 32 bytes -> 16-bit words holding (low nibble, high nibble) -> sign-extended bytes
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[c] + first / 2));
      const __m512i words = _mm512_cvtepu8_epi16(bytes);
      const __m512i nibbles = _mm512_or_si512(_mm512_and_si512(words, _mm512_set1_epi16(0x000F)),
                                              _mm512_slli_epi16(_mm512_and_si512(words, _mm512_set1_epi16(0x00F0)), 4));
      r[c] = _mm512_sub_epi8(_mm512_xor_si512(nibbles, nibble_flip), nibble_flip);
    }
  }
  // 4 x 4 blocks of quads within each 128-bit lane: u[G][i] lane L = quad 4L + i of rows 4G .. 4G + 3.
  __m512i u[4][4];
  for (int group = 0; group < 4; ++group) {
    const __m512i* v = r + 4 * group;
    const __m512i t0 = _mm512_unpacklo_epi32(v[0], v[1]), t1 = _mm512_unpackhi_epi32(v[0], v[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(v[2], v[3]), t3 = _mm512_unpackhi_epi32(v[2], v[3]);
    u[group][0] = _mm512_unpacklo_epi64(t0, t2);
    u[group][1] = _mm512_unpackhi_epi64(t0, t2);
    u[group][2] = _mm512_unpacklo_epi64(t1, t3);
    u[group][3] = _mm512_unpackhi_epi64(t1, t3);
  }
  // Then the 4 x 4 transpose of 128-bit lanes: line 4L + i gathers lane L of u[0..3][i].
  for (int i = 0; i < 4; ++i) {
    const __m512i x0 = _mm512_shuffle_i32x4(u[0][i], u[1][i], 0x44), x1 = _mm512_shuffle_i32x4(u[0][i], u[1][i], 0xEE);
    const __m512i x2 = _mm512_shuffle_i32x4(u[2][i], u[3][i], 0x44), x3 = _mm512_shuffle_i32x4(u[2][i], u[3][i], 0xEE);
    _mm512_storeu_si512(lines + (0 + i) * 64, _mm512_shuffle_i32x4(x0, x2, 0x88));
    _mm512_storeu_si512(lines + (4 + i) * 64, _mm512_shuffle_i32x4(x0, x2, 0xDD));
    _mm512_storeu_si512(lines + (8 + i) * 64, _mm512_shuffle_i32x4(x1, x3, 0x88));
    _mm512_storeu_si512(lines + (12 + i) * 64, _mm512_shuffle_i32x4(x1, x3, 0xDD));
  }
}

void PanelU8Avx512Vnni(const PanelArgs& args) { RunPanel<DotsU8Avx512Vnni>(args); }

}  // namespace oq
