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
    const uint8_t* a = GroupActivations<uint8_t>(p, row, g);
    const int8_t* w = GroupWeights(p, g);
    __m512i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    for (size_t q = 0; q < p.quads; ++q) {
      const __m512i wv = _mm512_loadu_si512(w + q * 64);
      for (int r = 0; r < R; ++r) {
        int32_t quad;
        std::memcpy(&quad, a + r * p.a_stride + q * kQuad, sizeof quad);
        acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(quad), wv);
      }
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_si512(out[r], acc[r]);
  }
};

}  // namespace

void PanelU8Avx512Vnni(const PanelArgs& args) { RunPanel<DotsU8Avx512Vnni>(args); }

}  // namespace oq
