// oq.QMatMul's weights in the panel layout of qgemm_kernels.h, unpacked from the op's packed
// rows (int8 one per byte, int4 two per byte low nibble first, int6 four per three bytes as
// little-endian 24-bit words) together with the per-group weight sums the unsigned-activation
// panels need. Constant weights are packed once when the session creates the kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "codes.h"
#include "qgemm_kernels.h"

namespace oq {

struct WeightPanels {
  size_t n = 0, k = 0, groups = 0, quads = 0, panels = 0;  // quads per group
  std::vector<int8_t> codes;     // [panels, groups, quads, 16, 4]
  std::vector<int32_t> sums;     // [panels, groups, 16]
  std::vector<float> scales;     // [panels, groups, 16]
  std::vector<int32_t> max_abs;  // [panels]  largest |w| of each panel

  WeightPanels(size_t n, size_t k, size_t groups);
  // Fills panel `panel` from packed rows [n, PackedRowBytes(bits, k)] and scales [n, groups].
  void Pack(size_t panel, const uint8_t* packed, int64_t bits, const float* row_scales);
  int32_t MaxAbs() const;
  size_t PanelBytes() const { return groups * quads * kPanelChannels * kQuad; }
};

}  // namespace oq
