// oq.QMatMul's weights in the panel layout of qgemm_kernels.h, unpacked from the op's packed
// rows (int8 one per byte, int4 two per byte low nibble first, int6 four per three bytes as
// little-endian 24-bit words) together with the per-group weight sums the unsigned-activation
// panels need (computed once per session for constant weights: GroupSums). The storage holds
// `slots` panels: every panel of the matrix when it is unpacked once (int6 weights of a
// session), or the panels a task unpacks for itself (storage a thread keeps from call to call:
// fresh pages for every panel cost more than unpacking it).
#pragma once

#include <cstdint>
#include <vector>

#include "codes.h"
#include "qgemm_kernels.h"

namespace oq {

struct WeightPanels {
  size_t n = 0, k = 0, groups = 0, quads = 0, panels = 0;  // quads per group, padding included
  std::vector<int8_t> codes;     // [slots, groups, quads, 16, 4]
  std::vector<int32_t> sums;     // [slots, groups, 16]
  std::vector<float> scales;     // [slots, groups, 16]

  WeightPanels() = default;
  WeightPanels(size_t n, size_t k, size_t groups, size_t quad_multiple, size_t slots) {
    Reset(n, k, groups, quad_multiple, slots);
  }
  // The geometry of an n x k matrix in `groups` groups, storage for `slots` panels (kept if larger).
  // Groups of at least `quad_multiple` quads are padded with zeros to a multiple of it
  // (CpuIsa::panel_quads); smaller ones to whole quads.
  void Reset(size_t n, size_t k, size_t groups, size_t quad_multiple, size_t slots);
  // Fills slot `slot` with panel `panel` of packed rows [n, PackedRowBytes(bits, k)], their scales and
  // group sums (both [n, groups]), padding included.
  // `transpose` (or null) is the ISA's vector form of the int8 and int4 unpacking.
  void Pack(size_t panel, const uint8_t* packed, int64_t bits, const float* row_scales, const int32_t* row_sums,
            size_t slot, TransposeQuadsFunction transpose = nullptr);
  size_t PanelBytes() const { return groups * quads * kPanelChannels * kQuad; }
  const int8_t* Codes(size_t slot) const { return codes.data() + slot * PanelBytes(); }
  const int32_t* Sums(size_t slot) const { return sums.data() + slot * groups * kPanelChannels; }
  const float* Scales(size_t slot) const { return scales.data() + slot * groups * kPanelChannels; }
};

// Σ_k w over each group of packed rows [n, PackedRowBytes(bits, k)]: [n, groups].
std::vector<int32_t> GroupSums(const uint8_t* packed, int64_t bits, size_t n, size_t k, size_t groups);

}  // namespace oq
