// AMX-INT8 QMatMul panel (compiled with -mavx512f -mavx512bw -mavx512vnni -mamx-tile -mamx-int8):
// TDPBUSD multiplies a tile of 16 rows x 64 unsigned activation codes with a tile of 16 quads x
// 16 channels of signed weight codes (the panel layout, one quad per tile row) into 16 x 16
// exact int32 sums, 16 times the work of one vpdpbusd. A tile of the panel call is 32 rows by
// two panels: C tiles 0-3 (rows 0-15 and 16-31 of panels 0 and 1), A tiles 4-5 (the two row
// halves), B tiles 6-7 (the two panels); each 64-code step loads four tiles and runs four
// products. The group's sums leave the tiles through memory and are scaled in AVX-512 vectors.
// K steps are whole tiles: the caller pads each group to a multiple of kAmxTileQuads quads
// (CpuIsa::panel_quads), weights and activations with zeros; groups smaller than one tile
// (groups of 32 codes) take the AVX-512 VNNI panel.
// Tile state belongs to the thread: each call configures its tiles and releases them at the end.
#include "amx_tiles.h"
#include "panel_avx512.h"

namespace oq {

namespace {

thread_local int configured_rows = 0;  // the tile height R the thread's tiles are configured for (0: none)

// Tiles for a tile of R rows: C and A tiles of min(R, 16) rows, and of the R - 16 rows left
// (unconfigured when none are); B tiles of a whole step.
void ConfigureTiles(int rows) {
  if (configured_rows == rows) return;
  const uint8_t top = static_cast<uint8_t>(rows < 16 ? rows : 16), bottom = static_cast<uint8_t>(rows - top);
  TileConfig config;
  constexpr uint8_t kStep = kAmxTileQuads;
  const uint8_t tile_rows[8] = {top, top, bottom, bottom, top, bottom, kStep, kStep};
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = tile_rows[t];
    config.colsb[t] = tile_rows[t] == 0 ? 0 : 64;
  }
  LoadTileConfig(config);
  configured_rows = rows;
}

struct DotsU8Amx {
  static constexpr int kRows = 32, kPanels = 2;
  template <int R, int P>
  static void Run(const PanelArgs& p, size_t row, size_t g, float (*sum)[kPanelChannels * P]) {
    constexpr bool kBottom = R > 16;
    constexpr size_t kWeightStep = kAmxTileQuads * kQuad * kPanelChannels;  // bytes of a B tile
    ConfigureTiles(R);
    const uint8_t* a = GroupActivations<uint8_t>(p, row, g);
    const int8_t* w0 = GroupWeights(p, g, 0);
    const int8_t* w1 = GroupWeights(p, g, P - 1);
    TileZero<0>();
    if constexpr (P == 2) TileZero<1>();
    if constexpr (kBottom) {
      TileZero<2>();
      if constexpr (P == 2) TileZero<3>();
    }
    for (size_t q = 0; q < p.quads; q += kAmxTileQuads) {
      TileLoad<4>(a + q * kQuad, p.a_stride);
      if constexpr (kBottom) TileLoad<5>(a + 16 * p.a_stride + q * kQuad, p.a_stride);
      TileLoad<6>(w0 + q / kAmxTileQuads * kWeightStep, kQuad * kPanelChannels);
      TileDotU8S8<0, 4, 6>();
      if constexpr (kBottom) TileDotU8S8<2, 5, 6>();
      if constexpr (P == 2) {
        TileLoad<7>(w1 + q / kAmxTileQuads * kWeightStep, kQuad * kPanelChannels);
        TileDotU8S8<1, 4, 7>();
        if constexpr (kBottom) TileDotU8S8<3, 5, 7>();
      }
    }
    alignas(64) int32_t dots[R][kPanelChannels * P];
    TileStore<0>(dots[0], sizeof dots[0]);
    if constexpr (P == 2) TileStore<1>(dots[0] + kPanelChannels, sizeof dots[0]);
    if constexpr (kBottom) {
      TileStore<2>(dots[16], sizeof dots[0]);
      if constexpr (P == 2) TileStore<3>(dots[16] + kPanelChannels, sizeof dots[0]);
    }
    AddScaledDotsAvx512<R, P>(p, row, g, dots, sum);
  }
};

}  // namespace

void PanelU8Amx(const PanelArgs& args) {
  if (args.quads % kAmxTileQuads != 0) return PanelU8Avx512Vnni(args);
  RunPanel<DotsU8Amx>(args);
  ReleaseTiles();
  configured_rows = 0;
}

}  // namespace oq
