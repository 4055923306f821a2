// Integer GEMM panels of oq.QMatMul, one implementation per instruction set.
//
// A panel call computes, for m rows of activation codes a and one or two panels of 16 output
// channels each,
//   y[r, c] = Σ_g a_scale[r, g] · w_scale[g, c] · Σ_{k ∈ group g} a[r, k] · w[k, c]  (+ bias[c])
// with exact int32 group sums. Weights are int8 codes in the panel layout of
// weight_panels.h: per group, per quad of 4 input channels, 16 channels × 4 codes (64 bytes),
// so one vector load holds 4 consecutive codes of 8 or 16 channels and one broadcast holds 4
// codes of a row: no horizontal sums.
//
// Activations come in one of two forms:
//  - kUnsigned8: u = a - a_offset in [0, 255] (x86 multiplies unsigned by signed bytes);
//    Σ a·w = Σ u·w + a_offset · Σ w, the weight sums being packed with the weights. AVX2's
//    vpmaddubsw adds two u·w products into an int16 that saturates, so the caller picks this
//    form only when 2·max(u)·max|w| ≤ 32767 (kInt16PairLimit) and passes how many quad steps
//    the int16 partial sums may take before they are widened to int32 (int16_steps).
//  - kSigned16: a as int16 (vpmaddwd: exact), for the case the first form would saturate
//    (8-bit activations spanning more than 128 codes times 8-bit weights, on AVX2).
// Rows are zero-padded group by group to whole quads, or to a multiple of the ISA's panel_quads
// (cpu_isa.h); the weights' padding is zero.
// The ISA-specific panels live in their own translation units compiled with their own -m
// flags and use no C++ library code, so nothing built for a newer ISA leaks into generic code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace oq {

constexpr size_t kPanelChannels = 16;  // output channels per weight panel
constexpr size_t kQuad = 4;            // input channels per packed 32-bit lane
constexpr int kInt16PairLimit = 32767;

struct PanelArgs {
  const void* a;             // [m, a_stride] uint8 (kUnsigned8) or int16 (kSigned16)
  size_t a_stride;           // elements per row: groups · quads · 4
  int32_t a_offset;          // kUnsigned8: a = u + a_offset
  size_t int16_steps;        // kUnsigned8 on AVX2: quads summed in int16 before widening
  size_t m, groups, quads;   // quads per group
  const float* a_scale;      // [m, groups]
  bool scale_groups;         // false: a_scale[r, g] is the same for every g (scaled once, after the sums)
  size_t panels;             // consecutive panels: 1 or kMaxPanels
  const int8_t* w;           // [panels, groups, quads, 16, 4]
  const int32_t* w_sums;     // [panels, groups, 16]  Σ_k w per group and channel
  const float* w_scales;     // [panels, groups, 16]
  const float* bias;         // [panels · 16], zero-padded
  float* y;                  // [m, ldy]; channels [0, n) are written
  size_t ldy, n;
};

constexpr size_t kMaxPanels = 2;  // panels one call may take (an ISA's tile may span both)
constexpr size_t kAmxTileQuads = 16;  // quads of one AMX tile step (64 codes); see panel_amx.cc

using PanelFunction = void (*)(const PanelArgs&);

// Codes [first, first + kTransposeCodes) of 16 packed weight rows (int8, or int4 with `first`
// even) as 16 lines of the panel layout: line q holds codes first + 4q, ..., first + 4q + 3 of
// each row in turn (64 bytes). Unpacking a panel for one call is this transpose.
constexpr size_t kTransposeCodes = 64;
using TransposeQuadsFunction = void (*)(const uint8_t* const* rows, int64_t bits, size_t first, int8_t* lines);
void TransposeQuadsAvx2(const uint8_t* const* rows, int64_t bits, size_t first, int8_t* lines);    // needs AVX2
void TransposeQuadsAvx512(const uint8_t* const* rows, int64_t bits, size_t first, int8_t* lines);  // AVX-512F/BW

void PanelU8Scalar(const PanelArgs& args);
void PanelU8Avx2(const PanelArgs& args);        // needs AVX2
void PanelS16Avx2(const PanelArgs& args);       // needs AVX2
void PanelU8Avx512Vnni(const PanelArgs& args);  // needs AVX-512F/BW + AVX512_VNNI
void PanelU8Amx(const PanelArgs& args);         // needs the above + AMX-TILE/AMX-INT8, tiles permitted

}  // namespace oq
