#include "weight_panels.h"

#include <algorithm>
#include <cstring>

namespace oq {

namespace {

// The two int4 codes of each byte value, low nibble first, as the int8 pair of a little-endian word.
struct NibblePairs {
  uint16_t pair[256] = {};
  constexpr NibblePairs() {
    for (int byte = 0; byte < 256; ++byte) {
      const int low = ((byte & 15) ^ 8) - 8, high = ((byte >> 4) ^ 8) - 8;
      pair[byte] = static_cast<uint16_t>((low & 255) | (high & 255) << 8);
    }
  }
};
constexpr NibblePairs kNibblePairs;

// Codes first, ..., first + 3 of a packed row as four int8 in a little-endian word.
inline uint32_t PackedQuad(const uint8_t* row, int64_t bits, size_t first) {
  if (bits == 8) {
    uint32_t quad;
    std::memcpy(&quad, row + first, sizeof quad);
    return quad;
  }
  if (bits == 4 && first % 2 == 0) {
    return kNibblePairs.pair[row[first / 2]] | static_cast<uint32_t>(kNibblePairs.pair[row[first / 2 + 1]]) << 16;
  }
  uint32_t quad = 0;
  for (size_t j = 0; j < kQuad; ++j) {
    quad |= static_cast<uint32_t>(PackedCode(row, static_cast<int>(bits), first + j) & 255) << (8 * j);
  }
  return quad;
}

}  // namespace

std::vector<int32_t> GroupSums(const uint8_t* packed, int64_t bits, size_t n, size_t k, size_t groups) {
  const size_t group = k / groups, whole_quads = group / kQuad;
  const size_t row_bytes = PackedRowBytes(bits, static_cast<int64_t>(k));
  std::vector<int32_t> sums(n * groups);
  for (size_t c = 0; c < n; ++c) {
    const uint8_t* row = packed + c * row_bytes;
    for (size_t g = 0; g < groups; ++g) {
      int32_t sum = 0;  // quad by quad, as Pack reads them, then the group's last codes
      for (size_t q = 0; q < whole_quads; ++q) {
        const uint32_t quad = PackedQuad(row, bits, g * group + q * kQuad);
        for (size_t j = 0; j < kQuad; ++j) sum += static_cast<int8_t>(quad >> (8 * j));
      }
      for (size_t i = whole_quads * kQuad; i < group; ++i) {
        sum += PackedCode(row, static_cast<int>(bits), g * group + i);
      }
      sums[c * groups + g] = sum;
    }
  }
  return sums;
}

void WeightPanels::Reset(size_t n_, size_t k_, size_t groups_, size_t quad_multiple, size_t slots) {
  n = n_, k = k_, groups = groups_, quads = (k / groups + kQuad - 1) / kQuad;
  if (quads >= quad_multiple) quads = (quads + quad_multiple - 1) / quad_multiple * quad_multiple;
  panels = (n + kPanelChannels - 1) / kPanelChannels;
  codes.resize(std::max(codes.size(), slots * PanelBytes()));
  sums.resize(std::max(sums.size(), slots * groups * kPanelChannels));
  scales.resize(std::max(scales.size(), slots * groups * kPanelChannels));
}

void WeightPanels::Pack(size_t panel, const uint8_t* packed, int64_t bits, const float* row_scales,
                        const int32_t* row_sums, size_t slot, TransposeQuadsFunction transpose) {
  const size_t group = k / groups, row_bytes = PackedRowBytes(bits, static_cast<int64_t>(k));
  const size_t whole_quads = group / kQuad, width = std::min(kPanelChannels, n - panel * kPanelChannels);
  int8_t* target = codes.data() + slot * PanelBytes();
  int32_t* slot_sums = sums.data() + slot * groups * kPanelChannels;
  float* slot_scales = scales.data() + slot * groups * kPanelChannels;
  std::fill(target, target + PanelBytes(), 0);
  std::fill(slot_sums, slot_sums + groups * kPanelChannels, 0);
  std::fill(slot_scales, slot_scales + groups * kPanelChannels, 0.0f);
  const uint8_t* rows[kPanelChannels];
  for (size_t c = 0; c < width; ++c) rows[c] = packed + (panel * kPanelChannels + c) * row_bytes;
  // Runs of kTransposeCodes codes go through the ISA's transpose where it can, the rest quad by
  // quad. Where groups fill whole quads and are not padded beyond them (or there is one group),
  // group g's quad q is quad g · group / 4 + q of the row, so the runs go on across group
  // boundaries (groups of 32 codes would otherwise have none).
  const bool vector = transpose != nullptr && width == kPanelChannels && (bits == 8 || bits == 4);
  const bool across_groups = vector && group % kQuad == 0 && (groups == 1 || quads * kQuad == group);
  const size_t transposed = across_groups ? k / kTransposeCodes * kTransposeCodes : 0;  // codes
  for (size_t first = 0; first < transposed; first += kTransposeCodes) {
    transpose(rows, bits, first, target + first * kPanelChannels);
  }
  for (size_t g = 0; g < groups; ++g) {
    int8_t* out = target + g * quads * kPanelChannels * kQuad;
    size_t vector_quads = 0;  // quads of this group already in place
    if (across_groups) {
      vector_quads = std::min(whole_quads, transposed > g * group ? (transposed - g * group) / kQuad : 0);
    } else if (vector && (bits == 8 || g * group % 2 == 0)) {
      vector_quads = group / kTransposeCodes * (kTransposeCodes / kQuad);
      for (size_t q = 0; q < vector_quads; q += kTransposeCodes / kQuad) {
        transpose(rows, bits, g * group + q * kQuad, out + q * kPanelChannels * kQuad);
      }
    }
    for (size_t c = 0; c < width; ++c) {
      for (size_t q = vector_quads; q < whole_quads; ++q) {
        const uint32_t quad = PackedQuad(rows[c], bits, g * group + q * kQuad);
        std::memcpy(out + (q * kPanelChannels + c) * kQuad, &quad, sizeof quad);
      }
      for (size_t i = whole_quads * kQuad; i < group; ++i) {
        out[(whole_quads * kPanelChannels + c) * kQuad + i % kQuad] =
            static_cast<int8_t>(PackedCode(rows[c], static_cast<int>(bits), g * group + i));
      }
    }
  }
  for (size_t c = 0; c < width; ++c) {  // [channel, group] -> [group, channel], read in order
    const int32_t* channel_sums = row_sums + (panel * kPanelChannels + c) * groups;
    const float* channel_scales = row_scales + (panel * kPanelChannels + c) * groups;
    for (size_t g = 0; g < groups; ++g) {
      slot_sums[g * kPanelChannels + c] = channel_sums[g];
      slot_scales[g * kPanelChannels + c] = channel_scales[g];
    }
  }
}

}  // namespace oq
