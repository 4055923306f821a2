// The ISA-independent part of a QMatMul panel call (see qgemm_kernels.h), included by each
// ISA's translation unit: Dots::Run<R, P>(args, row, group, sum) adds, for R activation rows and
// the 16 · P channels of P consecutive panels, the scaled exact group sums
//   sum[r][c] += a_scale[r, g] · w_scale[g, c] · (Σ_{k ∈ g} u[r, k] · w[k, c] + a_offset · Σ_{k ∈ g} w[k, c])
// (AddScaledDots below does the scaling for an ISA that keeps its int32 sums in memory); this
// file loops over row tiles and groups and adds the bias. Where a row's token scale is one for
// all groups (!scale_groups), the group sums are scaled by the weights only and the token scale
// is applied once per output (a multiply per group costs about 5% of a prefill call). An ISA
// whose tile spans two panels says so with Dots::kPanels = 2 (each weight load then feeds twice
// the rows' broadcasts); others take the panels one at a time. No library code.
#pragma once

#include "qgemm_kernels.h"

namespace oq {

namespace {  // internal linkage: each instruction set's unit keeps its own copy

// Group g of activation row `row` (element type A: uint8_t or int16_t) and of panel j's weights.
template <typename A>
inline const A* GroupActivations(const PanelArgs& p, size_t row, size_t g) {
  return static_cast<const A*>(p.a) + row * p.a_stride + g * p.quads * kQuad;
}

inline const int8_t* GroupWeights(const PanelArgs& p, size_t g, size_t j = 0) {
  return p.w + (j * p.groups + g) * p.quads * kQuad * kPanelChannels;
}

// The token scale of activation row `row`'s group g, and the factor of its group sums.
inline float TokenScale(const PanelArgs& p, size_t row, size_t g) { return p.a_scale[row * p.groups + g]; }
inline float GroupSumScale(const PanelArgs& p, size_t row, size_t g) {
  return p.scale_groups ? TokenScale(p, row, g) : 1.0f;
}

// sum[r][c] += the scaled group-g sums of int32 dots[r][c] of rows row.. (Dots::Run of an ISA that stores them).
template <int R, int P>
inline void AddScaledDots(const PanelArgs& p, size_t row, size_t g, const int32_t (*dots)[kPanelChannels * P],
                          float (*sum)[kPanelChannels * P]) {
  for (int j = 0; j < P; ++j) {
    const float* scale = p.w_scales + (j * p.groups + g) * kPanelChannels;
    const int32_t* w_sum = p.w_sums + (j * p.groups + g) * kPanelChannels;
    for (int r = 0; r < R; ++r) {
      const float a_scale = GroupSumScale(p, row + r, g);
      for (size_t c = 0; c < kPanelChannels; ++c) {
        sum[r][j * kPanelChannels + c] +=
            a_scale * scale[c] * static_cast<float>(dots[r][j * kPanelChannels + c] + p.a_offset * w_sum[c]);
      }
    }
  }
}

template <class Dots, int R, int P>
inline void PanelTile(const PanelArgs& p, size_t row) {
  constexpr int C = static_cast<int>(kPanelChannels) * P;
  float sum[R][C] = {};
  for (size_t g = 0; g < p.groups; ++g) Dots::template Run<R, P>(p, row, g, sum);
  for (int r = 0; r < R; ++r) {
    float* y = p.y + (row + r) * p.ldy;
    const float a_scale = p.scale_groups ? 1.0f : TokenScale(p, row + r, 0);
    for (size_t c = 0; c < p.n; ++c) y[c] = a_scale * sum[r][c] + p.bias[c];
  }
}

// The last p.m % Dots::kRows rows, one tile of exactly that height.
template <class Dots, int R, int P>
inline void PanelRemainder(const PanelArgs& p, size_t row) {
  if constexpr (R > 0) {
    if (p.m - row == R) {
      PanelTile<Dots, R, P>(p, row);
    } else {
      PanelRemainder<Dots, R - 1, P>(p, row);
    }
  }
}

template <class Dots, int P>
inline void RunTiles(const PanelArgs& p) {
  size_t row = 0;
  for (; row + Dots::kRows <= p.m; row += Dots::kRows) PanelTile<Dots, Dots::kRows, P>(p, row);
  PanelRemainder<Dots, Dots::kRows - 1, P>(p, row);
}

}  // namespace

template <class Dots>
inline void RunPanel(const PanelArgs& p) {
  if constexpr (Dots::kPanels == 2) {
    if (p.panels == 2) return RunTiles<Dots, 2>(p);
  }
  for (size_t j = 0; j < p.panels && j * kPanelChannels < p.n; ++j) {  // one panel at a time
    PanelArgs one = p;
    one.panels = 1;
    one.w = GroupWeights(p, 0, j);
    one.w_sums = p.w_sums + j * p.groups * kPanelChannels;
    one.w_scales = p.w_scales + j * p.groups * kPanelChannels;
    one.bias = p.bias + j * kPanelChannels;
    one.y = p.y + j * kPanelChannels;
    one.n = p.n - j * kPanelChannels < kPanelChannels ? p.n - j * kPanelChannels : kPanelChannels;
    RunTiles<Dots, 1>(one);
  }
}

}  // namespace oq
