// The ISA-independent part of a QMatMul panel (see qgemm_kernels.h), included by each ISA's
// translation unit: Dots::Run<R>(args, row, group, dots) sums the exact int32 dot products of
// R activation rows with the panel's 16 channels over one group; this file loops over row
// tiles and groups and applies scales, offset correction and bias (plain loops that the
// compiler vectorizes with the unit's own -m flags). No library code.
#pragma once

#include "qgemm_kernels.h"

namespace oq {

namespace {  // internal linkage: each instruction set's unit keeps its own copy

// Group g of activation row `row` (element type A: uint8_t or int16_t) and of the panel's weights.
template <typename A>
inline const A* GroupActivations(const PanelArgs& p, size_t row, size_t g) {
  return static_cast<const A*>(p.a) + row * p.a_stride + g * p.quads * kQuad;
}

inline const int8_t* GroupWeights(const PanelArgs& p, size_t g) { return p.w + g * p.quads * kQuad * kPanelChannels; }

}  // namespace

template <class Dots, int R>
inline void PanelTile(const PanelArgs& p, size_t row) {
  constexpr int C = static_cast<int>(kPanelChannels);
  float sum[R][C] = {};
  for (size_t g = 0; g < p.groups; ++g) {
    int32_t dots[R][C];
    Dots::template Run<R>(p, row, g, dots);
    const float* scale = p.w_scales + g * C;
    const int32_t* w_sum = p.w_sums + g * C;
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) sum[r][c] += scale[c] * static_cast<float>(dots[r][c] + p.a_offset * w_sum[c]);
  }
  for (int r = 0; r < R; ++r) {
    float* y = p.y + (row + r) * p.ldy;
    const float a_scale = p.a_scale[row + r];
    for (size_t c = 0; c < p.n; ++c) y[c] = a_scale * sum[r][c] + p.bias[c];
  }
}

// The last p.m % Dots::kRows rows, one tile of exactly that height.
template <class Dots, int R>
inline void PanelRemainder(const PanelArgs& p, size_t row) {
  if constexpr (R > 0) {
    if (p.m - row == R) {
      PanelTile<Dots, R>(p, row);
    } else {
      PanelRemainder<Dots, R - 1>(p, row);
    }
  }
}

template <class Dots>
inline void RunPanel(const PanelArgs& p) {
  size_t row = 0;
  for (; row + Dots::kRows <= p.m; row += Dots::kRows) PanelTile<Dots, Dots::kRows>(p, row);
  PanelRemainder<Dots, Dots::kRows - 1>(p, row);
}

}  // namespace oq
