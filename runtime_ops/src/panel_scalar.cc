// Portable QMatMul panel: plain loops over unsigned activations (exact in int32).
#include "panel_impl.h"

namespace oq {

namespace {

struct DotsScalar {
  static constexpr int kRows = 4, kPanels = 1;
  template <int R, int P>
  static void Run(const PanelArgs& p, size_t row, size_t g, float (*sum)[kPanelChannels]) {
    const int8_t* w = GroupWeights(p, g);
    int32_t out[R][kPanelChannels];
    for (int r = 0; r < R; ++r) {
      const uint8_t* a = GroupActivations<uint8_t>(p, row + r, g);
      for (size_t c = 0; c < kPanelChannels; ++c) {
        int32_t dot = 0;
        for (size_t q = 0; q < p.quads; ++q)
          for (size_t j = 0; j < kQuad; ++j) dot += a[q * kQuad + j] * w[(q * kPanelChannels + c) * kQuad + j];
        out[r][c] = dot;
      }
    }
    AddScaledDots<R, P>(p, row, g, out, sum);
  }
};

}  // namespace

void PanelU8Scalar(const PanelArgs& args) { RunPanel<DotsScalar>(args); }

}  // namespace oq
