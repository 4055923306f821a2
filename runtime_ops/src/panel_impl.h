// The ISA-independent loop of a QMatMul panel (see qgemm_kernels.h), included by each ISA's
// translation unit with its own Dot: Dot::Run<R, C> sums R x C int16 dot products over
// `length` elements (a multiple of Dot::kWidth). Plain C++ only: no library code.
#pragma once

#include "qgemm_kernels.h"

namespace oq {

template <class Dot, int R, int C>
inline void PanelTile(const PanelArgs& p, size_t row, size_t col) {
  const size_t stride = p.groups * p.group_stride;
  float sum[R][C] = {};
  for (size_t g = 0; g < p.groups; ++g) {
    int32_t dots[R][C];
    Dot::template Run<R, C>(p.a + row * stride + g * p.group_stride, p.w + col * stride + g * p.group_stride,
                            stride, p.group_stride, dots);
    for (int c = 0; c < C; ++c) {
      const float scale = p.w_scale[(col + c) * p.groups + g];
      for (int r = 0; r < R; ++r) sum[r][c] += scale * static_cast<float>(dots[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      const float bias = p.bias == nullptr ? 0.0f : p.bias[col + c];
      p.y[(row + r) * p.ldy + col + c] = p.a_scale[row + r] * sum[r][c] + bias;
    }
  }
}

template <class Dot, int R>
inline void PanelRows(const PanelArgs& p, size_t row) {
  constexpr int C = Dot::kCols;
  size_t col = 0;
  for (; col + C <= p.n; col += C) PanelTile<Dot, R, C>(p, row, col);
  for (; col < p.n; ++col) PanelTile<Dot, R, 1>(p, row, col);
}

// Row blocks of Dot::kRows (4) reuse one block of activation rows across all the panel's channels.
template <class Dot>
inline void RunPanel(const PanelArgs& p) {
  static_assert(Dot::kRows == 4, "row remainder below handles up to 3 rows");
  size_t row = 0;
  for (; row + 4 <= p.m; row += 4) PanelRows<Dot, 4>(p, row);
  switch (p.m - row) {
    case 3: PanelRows<Dot, 3>(p, row); break;
    case 2: PanelRows<Dot, 2>(p, row); break;
    case 1: PanelRows<Dot, 1>(p, row); break;
    default: break;
  }
}

}  // namespace oq
