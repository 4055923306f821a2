// Integer GEMM panels of oq.QMatMul, one implementation per instruction set.
//
// A panel computes, for m rows of activation codes and n output channels,
//   y[r, c] = a_scale[r] · Σ_g w_scale[c, g] · Σ_{k ∈ group g} a[r, k] · w[c, k]  (+ bias[c])
// with exact int32 group sums. Both operands are int16 copies of the int8/int6/int4 codes,
// row-major, each group zero-padded to `group_stride` (a multiple of the ISA's vector
// width), so one layout serves every ISA. The ISA-specific panels live in their own
// translation units compiled with their own -m flags and use no C++ library code, so
// nothing built for a newer ISA can leak into the generic code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace oq {

struct PanelArgs {
  const int16_t* a;        // [m, groups · group_stride]
  const int16_t* w;        // [n, groups · group_stride]
  size_t m, n, groups, group_stride;
  const float* a_scale;    // [m]
  const float* w_scale;    // [n, groups]
  const float* bias;       // [n] or null
  float* y;                // [m, ldy]
  size_t ldy;
};

void PanelScalar(const PanelArgs& args);
void PanelAvx2(const PanelArgs& args);        // needs AVX2
void PanelAvx512Vnni(const PanelArgs& args);  // needs AVX-512F/BW + AVX512_VNNI

}  // namespace oq
