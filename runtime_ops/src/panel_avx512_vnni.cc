// AVX-512 VNNI QMatMul panel (compiled with -mavx512f -mavx512bw -mavx512vnni): vpdpbusd
// multiplies a broadcast quad of unsigned activations with 16 channels x 4 signed weights and
// adds the four products into 16 int32 lanes without intermediate saturation, so every
// activation range is exact in one instruction per quad.
#include <immintrin.h>

#include <cstring>

#include "panel_impl.h"

namespace oq {

namespace {

struct DotsU8Avx512Vnni {
  static constexpr int kRows = 8;
  template <int R>
  static void Run(const PanelArgs& p, size_t row, size_t g, int32_t (*out)[kPanelChannels]) {
    // Short tiles (decode: one row) keep U independent sums per row over interleaved quads, so
    // consecutive vpdpbusd do not wait on each other's latency; integer sums, so still exact.
    constexpr int U = R >= 4 ? 1 : 4 / R;
    const uint8_t* a = GroupActivations<uint8_t>(p, row, g);
    const int8_t* w = GroupWeights(p, g);
    __m512i acc[R][U];
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < U; ++u) acc[r][u] = _mm512_setzero_si512();
    size_t q = 0;
    for (; q + U <= p.quads; q += U) {
      for (int u = 0; u < U; ++u) Step<R>(p, a, w, q + u, acc, u);
    }
    for (; q < p.quads; ++q) Step<R>(p, a, w, q, acc, 0);
    for (int r = 0; r < R; ++r) {
      for (int u = 1; u < U; ++u) acc[r][0] = _mm512_add_epi32(acc[r][0], acc[r][u]);
      _mm512_storeu_si512(out[r], acc[r][0]);
    }
  }

  // Quad q of R rows into their sums number u: one weight load, R broadcasts and vpdpbusd.
  template <int R, int U>
  static void Step(const PanelArgs& p, const uint8_t* a, const int8_t* w, size_t q, __m512i (&acc)[R][U], int u) {
    const __m512i wv = _mm512_loadu_si512(w + q * 64);
    for (int r = 0; r < R; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * p.a_stride + q * kQuad, sizeof quad);
      acc[r][u] = _mm512_dpbusd_epi32(acc[r][u], _mm512_set1_epi32(quad), wv);
    }
  }
};

}  // namespace

void PanelU8Avx512Vnni(const PanelArgs& args) { RunPanel<DotsU8Avx512Vnni>(args); }

}  // namespace oq
