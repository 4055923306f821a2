// AVX-512 VNNI row kernels (compiled with -mavx512f -mavx512bw -mavx512vnni): one 64-byte load
// of a packed weight row is 128 int4 or 64 int8 codes, made unsigned by flipping their top bits
// (row_kernels.h), and vpdpbusd multiplies it with 64 signed activation codes into 16 int32 lanes
// without intermediate saturation. The group's last load is masked, so no byte past the row is read.
#include <immintrin.h>

#include "rows_impl.h"

namespace oq {

namespace {

template <int kBits>
struct TileAvx512Vnni {
  static constexpr int kRows = 4, kChannels = 4, kChannelsOfOneRow = 8;
  static constexpr size_t kBlock = kBits == 4 ? 128 : 64;
  static constexpr int32_t kBias = kBits == 4 ? 8 : 128;

  template <int R, int C>
  static void Run(const RowArgs& p, size_t row, size_t channel) {
    const size_t group_bytes = GroupBytes(p, kBits), blocks = p.blocks;
    const __m512i flip = _mm512_set1_epi8(kBits == 4 ? static_cast<char>(0x88) : static_cast<char>(0x80));
    const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
    for (size_t g = 0; g < p.groups; ++g) {
      const int8_t* a[R];
      const uint8_t* w[C];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) a[r] = RowGroupActivations<int8_t>(p, row + r, g, kBlock);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) w[c] = RowGroupWeights(p, channel + c, g, kBits);
      __m512i acc[R][C];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
      for (size_t b = 0; b < blocks; ++b) {
        const size_t offset = b * 64, bytes = group_bytes - offset < 64 ? group_bytes - offset : 64;
        const __mmask64 mask = bytes == 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1;
        __m512i low[C], high[C];
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          const __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, w[c] + offset), flip);
          if constexpr (kBits == 4) {
            low[c] = _mm512_and_si512(u, low_nibbles);
            high[c] = _mm512_and_si512(_mm512_srli_epi16(u, 4), low_nibbles);
          } else {
            low[c] = u;
          }
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const int8_t* block = a[r] + b * kBlock;
          const __m512i a_low = _mm512_loadu_si512(block);
#pragma GCC unroll 8
          for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], low[c], a_low);
          if constexpr (kBits == 4) {
            const __m512i a_high = _mm512_loadu_si512(block + 64);
#pragma GCC unroll 8
            for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], high[c], a_high);
          }
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int32_t correction = kBias * p.a_sums[(row + r) * p.groups + g];
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          RowDot(p, channel + c, row + r, g) = _mm512_reduce_add_epi32(acc[r][c]) - correction;
        }
      }
    }
  }
};

}  // namespace

void RowsInt4Avx512Vnni(const RowArgs& args) { RunRows<TileAvx512Vnni<4>>(args); }
void RowsInt8Avx512Vnni(const RowArgs& args) { RunRows<TileAvx512Vnni<8>>(args); }

}  // namespace oq
