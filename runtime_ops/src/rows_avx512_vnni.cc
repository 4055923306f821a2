// AVX-512 VNNI row kernels (compiled with -mavx512f -mavx512bw -mavx512vnni): one 64-byte load
// of a packed weight row is 128 int4 or 64 int8 codes, made unsigned by flipping their top bits
// (row_kernels.h), and vpdpbusd multiplies it with 64 signed activation codes into 16 int32 lanes
// without intermediate saturation. The last load of a group (or row) is masked, so no byte past
// it is read.
//  - Groups of at least a block: the lanes of each group are summed into its dot product, which
//    is then scaled.
//  - Several groups per block: lane i of the products belongs to group i / (16 / groups per
//    block). The correction −bias · Σ a starts the first lane of each group, and each lane is
//    converted and multiplied by its group's scale into float lanes summed once at the end.
#include <immintrin.h>

#include "rows_impl.h"

namespace oq {

namespace {

template <int kBits>
struct TileAvx512Vnni {
  static constexpr int kRows = 4, kChannels = 4, kChannelsOfOneRow = 8;
  static constexpr size_t kBlock = kBits == 4 ? 128 : 64;
  static constexpr int kBiasShift = kBits == 4 ? 3 : 7;  // bias 8 or 128

  // The first `bytes` bytes of a 64-byte load.
  static __mmask64 LoadMask(size_t bytes) { return bytes >= 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1; }

  // The unsigned codes of the packed bytes `mask` selects: int4 split into the vectors of low and
  // high nibbles, int8 in `low`.
  static void LoadUnsigned(const uint8_t* w, __mmask64 mask, __m512i& low, __m512i& high) {
    const __m512i flip = _mm512_set1_epi8(kBits == 4 ? static_cast<char>(0x88) : static_cast<char>(0x80));
    const __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, w), flip);
    if constexpr (kBits == 4) {
      const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
      low = _mm512_and_si512(u, low_nibbles);
      high = _mm512_and_si512(_mm512_srli_epi16(u, 4), low_nibbles);
    } else {
      low = u;
    }
  }

  // acc + the products of the unsigned codes with one activation block.
  static __m512i Multiply(__m512i acc, __m512i low, __m512i high, const int8_t* block) {
    acc = _mm512_dpbusd_epi32(acc, low, _mm512_loadu_si512(block));
    if constexpr (kBits == 4) acc = _mm512_dpbusd_epi32(acc, high, _mm512_loadu_si512(block + 64));
    return acc;
  }

  template <int R, int C>
  static void Run(const RowArgs& p, size_t row, size_t channel) {
    if (p.groups_per_block > 1) {
      RunPackedGroups<R, C>(p, row, channel);
    } else {
      RunGroups<R, C>(p, row, channel);
    }
  }

  template <int R, int C>
  static void RunGroups(const RowArgs& p, size_t row, size_t channel) {
    const size_t group_bytes = GroupBytes(p, kBits);
    float total[R][C] = {};
    for (size_t g = 0; g < p.groups; ++g) {
      const uint8_t* w[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) w[c] = RowGroupWeights(p, channel + c, g, kBits);
      __m512i acc[R][C];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
      for (size_t b = 0; b < p.blocks; ++b) {
        const __mmask64 mask = LoadMask(group_bytes - b * 64);
        __m512i low[C], high[C];
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          LoadUnsigned(w[c] + b * 64, mask, low[c], high[c]);
          PrefetchNextTile(w[c] + b * 64, C, p.row_bytes);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const int8_t* block = RowGroupActivations<int8_t>(p, row + r, g, kBlock) + b * kBlock;
#pragma GCC unroll 8
          for (int c = 0; c < C; ++c) acc[r][c] = Multiply(acc[r][c], low[c], high[c], block);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int32_t correction = p.a_sums[(row + r) * p.groups + g] * (1 << kBiasShift);
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          const int32_t dot = _mm512_reduce_add_epi32(acc[r][c]) - correction;
          total[r][c] += TokenScale(p, row + r, g) * GroupScale(p, channel + c, g) * static_cast<float>(dot);
        }
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) RowSum(p, channel + c, row + r) = total[r][c];
  }

  template <int R, int C>
  static void RunPackedGroups(const RowArgs& p, size_t row, size_t channel) {
    const LaneGroups<16> lanes(p.groups_per_block);
    const __m512i lane_group = _mm512_loadu_si512(lanes.group);
    const __mmask16 first_lanes = static_cast<__mmask16>(lanes.first);
    __m512 total[R][C];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) total[r][c] = _mm512_setzero_ps();
    for (size_t b = 0; b < p.blocks; ++b) {
      const size_t g = b * p.groups_per_block, count = p.groups - g < p.groups_per_block ? p.groups - g : p.groups_per_block;
      const __mmask16 present = static_cast<__mmask16>((1u << count) - 1);
      const __mmask64 mask = LoadMask(p.row_bytes - b * 64);
      __m512i start[R];  // -bias · Σ a in the first lane of each group
      __m512 token_scale[R];  // each lane's group's token scale
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512i sums = _mm512_maskz_loadu_epi32(present, p.a_sums + (row + r) * p.groups + g);
        const __m512i spread = _mm512_maskz_permutexvar_epi32(first_lanes, lane_group, sums);
        start[r] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(spread, kBiasShift));
        token_scale[r] = _mm512_permutexvar_ps(lane_group,
                                               _mm512_maskz_loadu_ps(present, p.a_scales + (row + r) * p.groups + g));
      }
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        __m512i low, high;
        const uint8_t* w = p.w + (channel + c) * p.row_bytes + b * 64;
        LoadUnsigned(w, mask, low, high);
        PrefetchNextTile(w, C, p.row_bytes);
        const float* scales = p.w_scales + (channel + c) * p.groups + g;
        const __m512 scale = _mm512_permutexvar_ps(lane_group, _mm512_maskz_loadu_ps(present, scales));
        PrefetchNextTile(scales, C, p.groups * sizeof(float));
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m512i dots = Multiply(start[r], low, high, RowBlockActivations<int8_t>(p, row + r, b, kBlock));
          total[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(scale, token_scale[r]), total[r][c]);
        }
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) RowSum(p, channel + c, row + r) = _mm512_reduce_add_ps(total[r][c]);
  }
};

}  // namespace

void RowsInt4Avx512Vnni(const RowArgs& args) { RunRows<TileAvx512Vnni<4>>(args); }
void RowsInt8Avx512Vnni(const RowArgs& args) { RunRows<TileAvx512Vnni<8>>(args); }

}  // namespace oq
