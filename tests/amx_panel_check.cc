// Checks the AMX-INT8 QMatMul panel on a CPU without AMX: tests/test_amx_panel.py compiles this
// program with runtime_ops/src/panel_amx.cc and OQ_AMX_EMULATED (amx_tiles.h: the tile
// instructions as plain C++ that stops where the hardware would fault), under AddressSanitizer.
//
// Reads cases from stdin, one per line, and answers one line each:
//   panel M N PANELS GROUPS QUADS A_OFFSET SEED
//     random unsigned activations and signed weights in the panel layout; the AMX panel's
//     output against the scalar panel's on the same arguments -> "ok <max relative difference>"
//   pack BITS N K GROUPS SEED
//     random packed weight rows unpacked into panels padded to kAmxTileQuads quads per group,
//     against the unpadded panels (each group's quads, then zeros) -> "ok 0" or "mismatch ..."
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "codes.h"
#include "qgemm_kernels.h"
#include "weight_panels.h"

namespace oq {
[[noreturn]] void AmxFault(const char* what) {
  std::printf("fault %s\n", what);
  std::fflush(stdout);
  std::abort();
}
}  // namespace oq

namespace {

using oq::kPanelChannels;
using oq::kQuad;

std::string CheckPanel(size_t m, size_t n, size_t panels, size_t groups, size_t quads, int a_offset, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> unit(0.5f, 1.5f);
  const size_t a_stride = groups * quads * kQuad;
  std::vector<uint8_t> a(m * a_stride);
  for (auto& code : a) code = static_cast<uint8_t>(byte(random));
  std::vector<int8_t> w(panels * groups * quads * kQuad * kPanelChannels);
  for (auto& code : w) code = static_cast<int8_t>(byte(random) - 128);
  std::vector<int32_t> w_sums(panels * groups * kPanelChannels);
  for (auto& sum : w_sums) sum = byte(random) * 64 - 8192;
  std::vector<float> w_scales(panels * groups * kPanelChannels), a_scale(m * groups), bias(panels * kPanelChannels);
  for (auto& scale : w_scales) scale = unit(random) * 1e-3f;
  for (auto& scale : a_scale) scale = unit(random);
  for (auto& value : bias) value = unit(random);
  const size_t ldy = n + 3;  // a row stride wider than the panels' channels
  std::vector<float> amx(m * ldy, -7.0f), reference(m * ldy, -7.0f);
  oq::PanelArgs args{a.data(), a_stride, a_offset, quads, m, groups, quads, a_scale.data(), groups > 1, panels, w.data(),
                     w_sums.data(), w_scales.data(), bias.data(), amx.data(), ldy, n};
  oq::PanelU8Amx(args);
  args.y = reference.data();
  oq::PanelU8Scalar(args);
  double worst = 0.0, largest = 0.0;
  for (float y : reference) largest = std::max(largest, std::fabs(static_cast<double>(y)));
  for (size_t i = 0; i < amx.size(); ++i) {
    if (i % ldy >= n && amx[i] != -7.0f) return "wrote outside its channels at " + std::to_string(i);
    worst = std::max(worst, std::fabs(static_cast<double>(amx[i]) - reference[i]) / largest);
  }
  return (worst <= 1e-6 ? "ok " : "mismatch ") + std::to_string(worst);
}

std::string CheckPack(int64_t bits, size_t n, size_t k, size_t groups, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  const size_t row_bytes = oq::PackedRowBytes(bits, static_cast<int64_t>(k));
  std::vector<uint8_t> packed(n * row_bytes);
  for (auto& value : packed) value = static_cast<uint8_t>(byte(random));
  const std::vector<int32_t> sums = oq::GroupSums(packed.data(), bits, n, k, groups);
  const std::vector<float> scales(n * groups, 1.0f);
  oq::WeightPanels plain(n, k, groups, 1, 1), padded(n, k, groups, oq::kAmxTileQuads, 1);
  for (size_t panel = 0; panel < plain.panels; ++panel) {
    plain.Pack(panel, packed.data(), bits, scales.data(), sums.data(), 0, oq::TransposeQuadsAvx512);
    padded.Pack(panel, packed.data(), bits, scales.data(), sums.data(), 0, oq::TransposeQuadsAvx512);
    const size_t line = kPanelChannels * kQuad;
    for (size_t g = 0; g < groups; ++g) {
      for (size_t q = 0; q < padded.quads; ++q) {
        for (size_t i = 0; i < line; ++i) {
          const int8_t want = q < plain.quads ? plain.Codes(0)[(g * plain.quads + q) * line + i] : 0;
          if (padded.Codes(0)[(g * padded.quads + q) * line + i] != want) {
            return "mismatch panel " + std::to_string(panel) + " group " + std::to_string(g) + " quad " +
                   std::to_string(q);
          }
        }
      }
    }
  }
  if (plain.quads >= oq::kAmxTileQuads && padded.quads % oq::kAmxTileQuads != 0) return "mismatch: not padded";
  return "ok 0";
}

}  // namespace

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream fields(line);
    std::string kind;
    fields >> kind;
    if (kind == "panel") {
      size_t m, n, panels, groups, quads;
      int a_offset;
      unsigned seed;
      fields >> m >> n >> panels >> groups >> quads >> a_offset >> seed;
      std::cout << CheckPanel(m, n, panels, groups, quads, a_offset, seed) << std::endl;
    } else if (kind == "pack") {
      int64_t bits;
      size_t n, k, groups;
      unsigned seed;
      fields >> bits >> n >> k >> groups >> seed;
      std::cout << CheckPack(bits, n, k, groups, seed) << std::endl;
    } else {
      std::cout << "unknown case: " << line << std::endl;
      return 2;
    }
  }
  return 0;
}
