// The ISA-independent loops of a row kernel (see row_kernels.h), included by each ISA's
// translation unit: Tile::Run<R, C>(args, row, channel) computes the scaled sums of R activation
// rows with C channels, prefetching the next channel tile's weights as it reads its own;
// RunRows walks the channels in tiles of Tile::kChannels and, within one, the rows in tiles of
// Tile::kRows (the weights of a channel tile stay in cache while every row meets them), the
// last tiles of exactly the height and width left. No library code.
#pragma once

#include <xmmintrin.h>

#include <cstdint>

#include "row_kernels.h"

namespace oq {

namespace {  // internal linkage: each instruction set's unit keeps its own copy

// Block b of laid-out activation row `row` (element type A); with one group per block, group g's
// blocks start at block g · p.blocks.
template <typename A>
inline const A* RowBlockActivations(const RowArgs& p, size_t row, size_t b, size_t block) {
  return static_cast<const A*>(p.a) + row * p.a_stride + b * block;
}
template <typename A>
inline const A* RowGroupActivations(const RowArgs& p, size_t row, size_t g, size_t block) {
  return RowBlockActivations<A>(p, row, g * p.blocks, block);
}

// Where group g of channel c starts in the packed rows; how many bytes a group has.
inline const uint8_t* RowGroupWeights(const RowArgs& p, size_t c, size_t g, int bits) {
  return p.w + c * p.row_bytes + g * p.group * bits / 8;
}
inline size_t GroupBytes(const RowArgs& p, int bits) { return (p.group * bits + 7) / 8; }

inline float GroupScale(const RowArgs& p, size_t c, size_t g) { return p.w_scales[c * p.groups + g]; }
inline float TokenScale(const RowArgs& p, size_t row, size_t g) { return p.a_scales[row * p.groups + g]; }

// Decode streams the weights from memory, and a tile's rows (and their scales) are consecutive:
// ask for what the tile of `channels` rows after this one reads at the same position, `bytes`
// per row ahead of `at`. Past the last tile that address lies outside the array, which a
// prefetch may name (it never faults); it is computed as an integer, not as a pointer.
inline void PrefetchNextTile(const void* at, int channels, size_t bytes) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(at) + channels * bytes), _MM_HINT_T0);
}
inline float& RowSum(const RowArgs& p, size_t c, size_t row) { return p.sums[row * p.channels + c]; }

// The group of each 32-bit lane of a block's products, when a block holds `groups_per_block`
// groups of lanes / groups_per_block lanes each; and which lanes start a group.
template <int kLanes>
struct LaneGroups {
  int32_t group[kLanes];
  uint32_t first;  // bit i: lane i starts a group
  explicit LaneGroups(size_t groups_per_block) : first(0) {
    const size_t lanes_per_group = kLanes / groups_per_block;
    for (int i = 0; i < kLanes; ++i) {
      group[i] = static_cast<int32_t>(i / lanes_per_group);
      if (i % lanes_per_group == 0) first |= 1u << i;
    }
  }
};

template <class Tile, int R, int C>
inline void RowsOfHeight(const RowArgs& p, size_t row, size_t channel, size_t height) {
  if constexpr (R > 0) {
    if (height == R) {
      Tile::template Run<R, C>(p, row, channel);
    } else {
      RowsOfHeight<Tile, R - 1, C>(p, row, channel, height);
    }
  }
}

template <class Tile, int C>
inline void ChannelTile(const RowArgs& p, size_t channel) {
  size_t row = 0;
  for (; row + Tile::kRows <= p.m; row += Tile::kRows) Tile::template Run<Tile::kRows, C>(p, row, channel);
  if (row < p.m) RowsOfHeight<Tile, Tile::kRows - 1, C>(p, row, channel, p.m - row);
}

template <class Tile, int C>
inline void ChannelsOfWidth(const RowArgs& p, size_t channel, size_t width) {
  if constexpr (C > 0) {
    if (width == C) {
      ChannelTile<Tile, C>(p, channel);
    } else {
      ChannelsOfWidth<Tile, C - 1>(p, channel, width);
    }
  }
}

}  // namespace

template <class Tile, int C>
inline void RunChannelTiles(const RowArgs& p) {
  size_t channel = 0;
  for (; channel + C <= p.channels; channel += C) ChannelTile<Tile, C>(p, channel);
  if (channel < p.channels) ChannelsOfWidth<Tile, C - 1>(p, channel, p.channels - channel);
}

// One row (decode) takes wider channel tiles: its tiles have fewer sums to keep in registers,
// and more independent ones hide the latency of each.
template <class Tile>
inline void RunRows(const RowArgs& p) {
  if (p.m == 1) {
    RunChannelTiles<Tile, Tile::kChannelsOfOneRow>(p);
  } else {
    RunChannelTiles<Tile, Tile::kChannels>(p);
  }
}

}  // namespace oq
