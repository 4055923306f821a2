// The AMX tile operations of the AMX-INT8 QMatMul panel, on tile registers numbered at compile
// time: the hardware instructions (compiled with -mamx-tile -mamx-int8), or, when
// OQ_AMX_EMULATED is defined, plain C++ with the semantics of Intel's Software Developer's
// Manual, so that the panel's tile shapes, strides and layouts are checked on CPUs without AMX
// (runtime_ops/tests/amx_panel_check.cc). The emulation stops the program where the hardware
// would fault (a tile used unconfigured, shapes that do not chain).
//
// A tile is up to 16 rows of up to 64 bytes. TileDotU8S8<C, A, B> is TDPBUSD:
//   C[m][n] += Σ_{k < colsb(A)/4} Σ_{i < 4} u8(A[m][4k + i]) · s8(B[k][4n + i])   (int32, exact)
// so B holds, per row, one quad of 4 codes for each of 16 output channels: the panel layout of
// qgemm_kernels.h, one row per quad.
#pragma once

#include <cstddef>
#include <cstdint>

#ifndef OQ_AMX_EMULATED
#include <immintrin.h>
#endif

namespace oq {

// The 64-byte operand of LDTILECFG (palette 1: 8 tiles of at most 16 rows x 64 bytes).
struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};  // bytes per row of tile t
  uint8_t rows[16] = {};    // rows of tile t (0: unconfigured)
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

#ifndef OQ_AMX_EMULATED

// (GCC's _tile_* macros paste their tile argument into the instruction text, so they cannot take
// a template parameter; these print it with the "c" operand modifier instead.)
inline void LoadTileConfig(const TileConfig& config) { _tile_loadconfig(&config); }
inline void ReleaseTiles() { _tile_release(); }
template <int T>
inline void TileZero() { __asm__ volatile("tilezero %%tmm%c0" ::"i"(T)); }
template <int T>
inline void TileLoad(const void* base, size_t stride) {
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(base), "r"(static_cast<long>(stride)), "i"(T) : "memory");
}
template <int T>
inline void TileStore(void* base, size_t stride) {
  __asm__ volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(base), "r"(static_cast<long>(stride)), "i"(T) : "memory");
}
template <int C, int A, int B>
inline void TileDotU8S8() { __asm__ volatile("tdpbusd %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(C), "i"(A), "i"(B)); }

#else

struct EmulatedTiles {
  TileConfig config;
  bool configured = false;
  uint8_t bytes[8][16][64];
};
inline thread_local EmulatedTiles emulated_tiles;

[[noreturn]] void AmxFault(const char* what);  // defined by the program that emulates

inline void LoadTileConfig(const TileConfig& config) {
  if (config.palette != 1) AmxFault("palette");
  for (int t = 0; t < 8; ++t) {
    if (config.rows[t] > 16 || config.colsb[t] > 64 || (config.rows[t] == 0) != (config.colsb[t] == 0)) {
      AmxFault("tile shape");
    }
  }
  emulated_tiles.config = config;
  emulated_tiles.configured = true;
  for (auto& tile : emulated_tiles.bytes)
    for (auto& row : tile)
      for (auto& byte : row) byte = 0;
}
inline void ReleaseTiles() { emulated_tiles.configured = false; }
inline void CheckTile(int t) {
  if (!emulated_tiles.configured || emulated_tiles.config.rows[t] == 0) AmxFault("unconfigured tile");
}
template <int T>
inline void TileZero() {
  CheckTile(T);
  for (auto& row : emulated_tiles.bytes[T])
    for (auto& byte : row) byte = 0;
}
template <int T>
inline void TileLoad(const void* base, size_t stride) {  // rows beyond the shape are zeroed
  CheckTile(T);
  const TileConfig& c = emulated_tiles.config;
  for (int r = 0; r < 16; ++r)
    for (int b = 0; b < 64; ++b) {
      emulated_tiles.bytes[T][r][b] =
          r < c.rows[T] && b < c.colsb[T] ? static_cast<const uint8_t*>(base)[r * stride + b] : 0;
    }
}
template <int T>
inline void TileStore(void* base, size_t stride) {
  CheckTile(T);
  const TileConfig& c = emulated_tiles.config;
  for (int r = 0; r < c.rows[T]; ++r)
    for (int b = 0; b < c.colsb[T]; ++b) static_cast<uint8_t*>(base)[r * stride + b] = emulated_tiles.bytes[T][r][b];
}
template <int C, int A, int B>
inline void TileDotU8S8() {
  CheckTile(C), CheckTile(A), CheckTile(B);
  const TileConfig& c = emulated_tiles.config;
  if (c.rows[A] != c.rows[C] || c.colsb[B] != c.colsb[C] || c.rows[B] * 4 != c.colsb[A] || c.colsb[C] % 4 != 0) {
    AmxFault("tile shapes do not chain");
  }
  auto& tiles = emulated_tiles.bytes;
  for (int m = 0; m < c.rows[C]; ++m)
    for (int n = 0; n < c.colsb[C] / 4; ++n) {
      int32_t sum;
      __builtin_memcpy(&sum, &tiles[C][m][4 * n], sizeof sum);
      for (int k = 0; k < c.colsb[A] / 4; ++k)
        for (int i = 0; i < 4; ++i) sum += tiles[A][m][4 * k + i] * static_cast<int8_t>(tiles[B][k][4 * n + i]);
      __builtin_memcpy(&tiles[C][m][4 * n], &sum, sizeof sum);
    }
}

#endif

}  // namespace oq
