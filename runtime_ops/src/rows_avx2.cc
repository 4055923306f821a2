// AVX2 row kernels (compiled with -mavx2). The last load of a group that would run past it
// reads a zero-padded copy, so no byte past the row is read.
//  - int4: one 32-byte load is 64 codes, made unsigned (row_kernels.h) and split into nibbles;
//    vpmaddubsw multiplies them with signed activation codes into int16 pairs (at most
//    2 · 15 · 128, exact), vpmaddwd by ones widens them into int32.
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

// 32 or 16 bytes of a weight group from `offset`, read from a zero-padded copy where the group
// ends sooner (only there: a load that spans the stores of a copy stalls).
inline __m256i LoadWeights32(const uint8_t* group, size_t offset, size_t group_bytes) {
  if (group_bytes - offset >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + offset));
  alignas(32) uint8_t bytes[32] = {};
  std::memcpy(bytes, group + offset, group_bytes - offset);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(bytes));
}

inline __m128i LoadWeights16(const uint8_t* group, size_t offset, size_t group_bytes) {
  if (group_bytes - offset >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(group + offset));
  alignas(16) uint8_t bytes[16] = {};
  std::memcpy(bytes, group + offset, group_bytes - offset);
  return _mm_load_si128(reinterpret_cast<const __m128i*>(bytes));
}

struct TileInt4Avx2 {
  static constexpr int kRows = 2, kChannels = 4, kChannelsOfOneRow = 8;
  static constexpr size_t kBlock = 64;

  template <int R, int C>
  static void Run(const RowArgs& p, size_t row, size_t channel) {
    const size_t group_bytes = GroupBytes(p, 4);
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x88)), low_nibbles = _mm256_set1_epi8(0x0F);
    const __m256i ones = _mm256_set1_epi16(1);
    for (size_t g = 0; g < p.groups; ++g) {
      __m256i acc[R][C];
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_si256();
      for (size_t b = 0; b < p.blocks; ++b) {
        __m256i a[R][2];
        for (int r = 0; r < R; ++r) {
          const int8_t* block = RowGroupActivations<int8_t>(p, row + r, g, kBlock) + b * kBlock;
          a[r][0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block));
          a[r][1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32));
        }
        for (int c = 0; c < C; ++c) {
          const __m256i packed = LoadWeights32(RowGroupWeights(p, channel + c, g, 4), b * 32, group_bytes);
          const __m256i u = _mm256_xor_si256(packed, flip);
          const __m256i low = _mm256_and_si256(u, low_nibbles);
          const __m256i high = _mm256_and_si256(_mm256_srli_epi16(u, 4), low_nibbles);
          for (int r = 0; r < R; ++r) {
            const __m256i pairs =
                _mm256_add_epi16(_mm256_maddubs_epi16(low, a[r][0]), _mm256_maddubs_epi16(high, a[r][1]));
            acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(pairs, ones));
          }
        }
      }
      for (int r = 0; r < R; ++r) {
        const int32_t correction = 8 * p.a_sums[(row + r) * p.groups + g];
        for (int c = 0; c < C; ++c) RowDot(p, channel + c, row + r, g) = SumLanes(acc[r][c]) - correction;
      }
    }
  }
};

struct TileInt8Avx2 {
  static constexpr int kRows = 2, kChannels = 4, kChannelsOfOneRow = 8;
  static constexpr size_t kBlock = 16;

  template <int R, int C>
  static void Run(const RowArgs& p, size_t row, size_t channel) {
    const size_t group_bytes = GroupBytes(p, 8);
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
          const __m128i packed = LoadWeights16(RowGroupWeights(p, channel + c, g, 8), b * 16, group_bytes);
          const __m256i w = _mm256_cvtepi8_epi16(packed);
          for (int r = 0; r < R; ++r) acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(w, a[r]));
        }
      }
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) RowDot(p, channel + c, row + r, g) = SumLanes(acc[r][c]);
    }
  }
};

}  // namespace

void RowsInt4Avx2(const RowArgs& args) { RunRows<TileInt4Avx2>(args); }
void RowsInt8Avx2(const RowArgs& args) { RunRows<TileInt8Avx2>(args); }

}  // namespace oq
