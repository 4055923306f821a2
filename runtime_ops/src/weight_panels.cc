#include "weight_panels.h"

#include <algorithm>
#include <cstdlib>

namespace oq {

namespace {

// Decodes one packed weight row of k codes into int8.
void DecodeRow(const uint8_t* row, int64_t bits, size_t k, int8_t* out) {
  if (bits == 8) {
    std::copy(row, row + k, reinterpret_cast<uint8_t*>(out));
  } else {
    for (size_t i = 0; i < k; ++i) out[i] = static_cast<int8_t>(PackedCode(row, static_cast<int>(bits), i));
  }
}

}  // namespace

WeightPanels::WeightPanels(size_t n, size_t k, size_t groups)
    : n(n), k(k), groups(groups), quads((k / groups + kQuad - 1) / kQuad),
      panels((n + kPanelChannels - 1) / kPanelChannels),
      codes(panels * groups * quads * kPanelChannels * kQuad),
      sums(panels * groups * kPanelChannels),
      scales(panels * groups * kPanelChannels),
      max_abs(panels) {}

void WeightPanels::Pack(size_t panel, const uint8_t* packed, int64_t bits, const float* row_scales) {
  const size_t group = k / groups, row_bytes = PackedRowBytes(bits, static_cast<int64_t>(k));
  int8_t* target = codes.data() + panel * PanelBytes();
  std::vector<int8_t> row(k);
  int32_t largest = 0;
  for (size_t c = 0; c < kPanelChannels && panel * kPanelChannels + c < n; ++c) {
    const size_t channel = panel * kPanelChannels + c;
    DecodeRow(packed + channel * row_bytes, bits, k, row.data());
    for (size_t g = 0; g < groups; ++g) {
      int32_t sum = 0;
      for (size_t i = 0; i < group; ++i) {
        const int8_t code = row[g * group + i];
        target[((g * quads + i / kQuad) * kPanelChannels + c) * kQuad + i % kQuad] = code;
        sum += code;
        largest = std::max(largest, std::abs(static_cast<int32_t>(code)));
      }
      sums[(panel * groups + g) * kPanelChannels + c] = sum;
      scales[(panel * groups + g) * kPanelChannels + c] = row_scales[channel * groups + g];
    }
  }
  max_abs[panel] = largest;
}

int32_t WeightPanels::MaxAbs() const {
  return max_abs.empty() ? 0 : *std::max_element(max_abs.begin(), max_abs.end());
}

}  // namespace oq
