// AVX2 row kernels (compiled with -mavx2 -mfma). The last load of a group (or row) that would
// run past it reads a zero-padded copy, so no byte past it is read.
//  - int4: one 32-byte load is 64 codes, made unsigned (row_kernels.h) and split into nibbles;
//    vpmaddubsw multiplies them with signed activation codes into int16 pairs (at most
//    2 · 15 · 128, exact), vpmaddwd by ones widens them into int32 lanes of 8 codes each. Groups
//    smaller than a block share it: lane i belongs to group i / (8 / groups per block), the
//    correction −8 · Σ a starts each group's first lane, and the lanes are scaled by their
//    group's scale into float lanes summed once at the end.
//  - int8: 16 codes sign-extended to int16 and vpmaddwd with int16 activations (exact; unsigned
//    int8 products of pairs would saturate int16).
#include <immintrin.h>

#include <cstring>

#include "rows_impl.h"

namespace oq {

namespace {

inline int32_t SumLanes(__m256i v) {
  const __m128i half = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i quarter = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(quarter, _mm_shuffle_epi32(quarter, 0xB1)));
}

inline float SumLanes(__m256 v) {
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)));
}

// 32 or 16 bytes from `offset` of `bytes` packed bytes, read from a zero-padded copy where they
// end sooner (only there: a load that spans the stores of a copy stalls).
inline __m256i LoadWeights32(const uint8_t* w, size_t offset, size_t bytes) {
  if (bytes - offset >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + offset));
  alignas(32) uint8_t copy[32] = {};
  std::memcpy(copy, w + offset, bytes - offset);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(copy));
}

inline __m128i LoadWeights16(const uint8_t* w, size_t offset, size_t bytes) {
  if (bytes - offset >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + offset));
  alignas(16) uint8_t copy[16] = {};
  std::memcpy(copy, w + offset, bytes - offset);
  return _mm_load_si128(reinterpret_cast<const __m128i*>(copy));
}

struct TileInt4Avx2 {
  static constexpr int kRows = 2, kChannels = 4, kChannelsOfOneRow = 8;
  static constexpr size_t kBlock = 64;

  // The 64 codes of 32 packed bytes times one activation block, in 8 int32 lanes.
  static __m256i Multiply(__m256i packed, const __m256i (&a)[2]) {
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x88)), low_nibbles = _mm256_set1_epi8(0x0F);
    const __m256i u = _mm256_xor_si256(packed, flip);
    const __m256i low = _mm256_and_si256(u, low_nibbles);
    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(u, 4), low_nibbles);
    const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(low, a[0]), _mm256_maddubs_epi16(high, a[1]));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
  }

  static void LoadBlock(const int8_t* block, __m256i (&a)[2]) {
    a[0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block));
    a[1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32));
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
    const size_t group_bytes = GroupBytes(p, 4);
    float total[R][C] = {};
    for (size_t g = 0; g < p.groups; ++g) {
      __m256i acc[R][C];
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_si256();
      for (size_t b = 0; b < p.blocks; ++b) {
        __m256i a[R][2];
        for (int r = 0; r < R; ++r) LoadBlock(RowGroupActivations<int8_t>(p, row + r, g, kBlock) + b * kBlock, a[r]);
        for (int c = 0; c < C; ++c) {
          const uint8_t* w = RowGroupWeights(p, channel + c, g, 4);
          const __m256i packed = LoadWeights32(w, b * 32, group_bytes);
          PrefetchNextTile(w + b * 32, C, p.row_bytes);
          for (int r = 0; r < R; ++r) acc[r][c] = _mm256_add_epi32(acc[r][c], Multiply(packed, a[r]));
        }
      }
      for (int r = 0; r < R; ++r) {
        const int32_t correction = 8 * p.a_sums[(row + r) * p.groups + g];
        for (int c = 0; c < C; ++c) {
          total[r][c] += TokenScale(p, row + r, g) * GroupScale(p, channel + c, g) *
                         static_cast<float>(SumLanes(acc[r][c]) - correction);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) RowSum(p, channel + c, row + r) = total[r][c];
  }

  template <int R, int C>
  static void RunPackedGroups(const RowArgs& p, size_t row, size_t channel) {
    const LaneGroups<8> lanes(p.groups_per_block);
    const __m256i lane_group = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes.group));
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i first_lanes = _mm256_cmpgt_epi32(
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(lanes.first)), lane), _mm256_set1_epi32(1)),
        _mm256_setzero_si256());
    __m256 total[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) total[r][c] = _mm256_setzero_ps();
    for (size_t b = 0; b < p.blocks; ++b) {
      const size_t g = b * p.groups_per_block, count = p.groups - g < p.groups_per_block ? p.groups - g : p.groups_per_block;
      const __m256i present = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), lane);
      __m256i a[R][2], start[R];  // start: -8 · Σ a in the first lane of each group
      __m256 token_scale[R];       // each lane's group's token scale
      for (int r = 0; r < R; ++r) {
        LoadBlock(RowBlockActivations<int8_t>(p, row + r, b, kBlock), a[r]);
        const __m256i sums = _mm256_maskload_epi32(p.a_sums + (row + r) * p.groups + g, present);
        const __m256i spread = _mm256_and_si256(_mm256_permutevar8x32_epi32(sums, lane_group), first_lanes);
        start[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(spread, 3));
        token_scale[r] = _mm256_permutevar8x32_ps(_mm256_maskload_ps(p.a_scales + (row + r) * p.groups + g, present),
                                                  lane_group);
      }
      for (int c = 0; c < C; ++c) {
        const uint8_t* w = p.w + (channel + c) * p.row_bytes;
        const __m256i packed = LoadWeights32(w, b * 32, p.row_bytes);
        PrefetchNextTile(w + b * 32, C, p.row_bytes);
        const float* scales = p.w_scales + (channel + c) * p.groups + g;
        const __m256 scale = _mm256_permutevar8x32_ps(_mm256_maskload_ps(scales, present), lane_group);
        PrefetchNextTile(scales, C, p.groups * sizeof(float));
        for (int r = 0; r < R; ++r) {
          const __m256i dots = _mm256_add_epi32(start[r], Multiply(packed, a[r]));
          total[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), _mm256_mul_ps(scale, token_scale[r]), total[r][c]);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) RowSum(p, channel + c, row + r) = SumLanes(total[r][c]);
  }
};

struct TileInt8Avx2 {
  static constexpr int kRows = 2, kChannels = 4, kChannelsOfOneRow = 8;
  static constexpr size_t kBlock = 16;

  template <int R, int C>
  static void Run(const RowArgs& p, size_t row, size_t channel) {
    const size_t group_bytes = GroupBytes(p, 8);
    float total[R][C] = {};
    for (size_t g = 0; g < p.groups; ++g) {
      __m256i acc[R][C];
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_si256();
      for (size_t b = 0; b < p.blocks; ++b) {
        __m256i a[R];
        for (int r = 0; r < R; ++r) {
          const int16_t* block = RowGroupActivations<int16_t>(p, row + r, g, kBlock) + b * kBlock;
          a[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block));
        }
        for (int c = 0; c < C; ++c) {
          const uint8_t* packed = RowGroupWeights(p, channel + c, g, 8);
          const __m256i w = _mm256_cvtepi8_epi16(LoadWeights16(packed, b * 16, group_bytes));
          PrefetchNextTile(packed + b * 16, C, p.row_bytes);
          for (int r = 0; r < R; ++r) acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(w, a[r]));
        }
      }
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) {
          total[r][c] += TokenScale(p, row + r, g) * GroupScale(p, channel + c, g) *
                         static_cast<float>(SumLanes(acc[r][c]));
        }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) RowSum(p, channel + c, row + r) = total[r][c];
  }
};

}  // namespace

void RowsInt4Avx2(const RowArgs& args) { RunRows<TileInt4Avx2>(args); }
void RowsInt8Avx2(const RowArgs& args) { RunRows<TileInt8Avx2>(args); }

}  // namespace oq
