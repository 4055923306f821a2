// Portable QMatMul panel: plain loops (the compiler vectorizes for the baseline ISA).
#include "panel_impl.h"

namespace oq {

namespace {

struct DotScalar {
  static constexpr int kRows = 4, kCols = 2;
  template <int R, int C>
  static void Run(const int16_t* a, const int16_t* w, size_t stride, size_t length, int32_t (*out)[C]) {
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) {
        const int16_t* x = a + r * stride;
        const int16_t* y = w + c * stride;
        int32_t sum = 0;
        for (size_t k = 0; k < length; ++k) sum += static_cast<int32_t>(x[k]) * y[k];
        out[r][c] = sum;
      }
    }
  }
};

}  // namespace

void PanelScalar(const PanelArgs& args) { RunPanel<DotScalar>(args); }

}  // namespace oq
