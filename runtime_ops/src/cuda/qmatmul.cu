// oq.QMatMul (CUDA): int8 tensor-core GEMM of activation codes with packed int8/int6/int4
// weights, unpacked inside the kernel, and the dequantization in the epilogue:
//   Y[t, n] = s_t · Σ_g w_scale[n, g] · Σ_{k ∈ g} a[t, k] · w[n, k] + bias[n]   (ops.h).
//
// A block computes a BM x BN tile of Y. It walks the groups in k-tiles of 32 (the tail of a
// group that is not a multiple of 32 is zero-filled); each thread fetches 16-code chunks of
// the next tile into registers (weights decoded there from their packed bytes, codes.h)
// while the warps run mma.sync.m16n8k32 (s8 x s8 -> s32) on the current tile in shared
// memory. At the end of each group the exact int32 sums are scaled by w_scale[n, g] into
// float accumulators; the epilogue multiplies by s_t and adds the bias. Both operands are
// k-contiguous ("row.col"): A = codes [rows, k] row-major, B = the weight rows [n, k].
// Fragment layouts (PTX ISA, m16n8k32 .s8): with g = lane / 4 and t = lane % 4,
//   A regs: (row g, k 4t..4t+3), (g+8, 4t..), (g, 16+4t..), (g+8, 16+4t..);
//   B regs: (channel g, k 4t..4t+3), (g, 16+4t..);  C: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
// Shared rows are 48 bytes apart, so the 8 rows of a fragment load fall in distinct banks.
// Two tilings: 128 x 128 with 8 warps for prefill, 16 x 64 with 4 warps for rows <= 64 (decode).
#include <cstring>

#include "../codes.h"
#include "cuda_kernels.h"
#include "device.cuh"

namespace oq::cuda {

namespace {

constexpr int kTileK = 32;              // k per shared-memory tile: one m16n8k32 step
constexpr int kChunk = 16;              // codes a thread moves per fetch
constexpr int kChunksPerRow = kTileK / kChunk;
constexpr int kRowBytes = kTileK + 16;  // shared-memory row stride

template <int kRows, int kCols, int kWarpsM, int kWarpsN>
struct Tiling {
  static constexpr int kBM = kRows, kBN = kCols;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpRows = kRows / kWarpsM, kWarpCols = kCols / kWarpsN;
  static constexpr int kMmaRows = kWarpRows / 16, kMmaCols = kWarpCols / 8;
  static constexpr int kAChunks = kRows * kChunksPerRow, kWChunks = kCols * kChunksPerRow;
  static constexpr int kAFetches = (kAChunks + kThreads - 1) / kThreads, kWFetches = (kWChunks + kThreads - 1) / kThreads;
};
using PrefillTiling = Tiling<128, 128, 2, 4>;  // warp tile 64 x 32
using DecodeTiling = Tiling<16, 64, 1, 4>;     // warp tile 16 x 16

struct Problem {
  const int8_t* codes;          // [rows, k]
  const void* token_scales;     // [rows] T
  const uint8_t* weight;        // [n, row_bytes]
  const float* weight_scales;   // [n, groups]
  const float* bias;            // [n] or null
  void* y;                      // [rows, n] T
  int rows, k, n, groups, group;
  int64_t row_bytes;
};

__device__ __forceinline__ uint4 Words(const uint8_t (&bytes)[kChunk]) {
  uint4 words;
  memcpy(&words, bytes, sizeof words);
  return words;
}

// Activation codes k0 .. k0+15 of `row`, zero at and after `end` and past the last row.
__device__ __forceinline__ uint4 FetchActivations(const Problem& p, int row, int k0, int end) {
  if (row >= p.rows || k0 >= end) return make_uint4(0, 0, 0, 0);
  const int8_t* source = p.codes + static_cast<int64_t>(row) * p.k + k0;
  if (k0 + kChunk <= end && (reinterpret_cast<uintptr_t>(source) & 15) == 0) {
    return __ldg(reinterpret_cast<const uint4*>(source));
  }
  uint8_t bytes[kChunk];
#pragma unroll
  for (int j = 0; j < kChunk; ++j) bytes[j] = k0 + j < end ? static_cast<uint8_t>(source[j]) : 0;
  return Words(bytes);
}

// Weight codes k0 .. k0+15 of `channel` as int8, decoded from the packed row; zero at and
// after `end` and past the last channel. A whole chunk starting at a multiple of 4 starts on
// a packed word: its bytes are loaded once and decoded in registers.
template <int kBits>
__device__ __forceinline__ uint4 FetchWeights(const Problem& p, int channel, int k0, int end) {
  if (channel >= p.n || k0 >= end) return make_uint4(0, 0, 0, 0);
  const uint8_t* row = p.weight + static_cast<int64_t>(channel) * p.row_bytes;
  uint8_t codes[kChunk];
  if (k0 + kChunk <= end && k0 % 4 == 0) {
    constexpr int kPackedBytes = kChunk * kBits / 8;
    const uint8_t* source = row + k0 / 4 * (4 * kBits / 8);
    uint8_t packed[kPackedBytes];
#pragma unroll
    for (int j = 0; j < kPackedBytes; ++j) packed[j] = __ldg(source + j);
#pragma unroll
    for (int j = 0; j < kChunk; ++j) codes[j] = static_cast<uint8_t>(PackedCode(packed, kBits, j));
  } else {
#pragma unroll
    for (int j = 0; j < kChunk; ++j) codes[j] = k0 + j < end ? static_cast<uint8_t>(PackedCode(row, kBits, k0 + j)) : 0;
  }
  return Words(codes);
}

__device__ __forceinline__ void Mma(int (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t SharedWord(const uint8_t* tile, int row, int byte) {
  return *reinterpret_cast<const uint32_t*>(tile + row * kRowBytes + byte);
}

template <int kBits, typename T, typename Tiles>
__global__ void __launch_bounds__(Tiles::kThreads) QMatMulTiles(Problem p) {
  __shared__ alignas(16) uint8_t a_tile[Tiles::kBM * kRowBytes];
  __shared__ alignas(16) uint8_t w_tile[Tiles::kBN * kRowBytes];
  const int m0 = blockIdx.y * Tiles::kBM, n0 = blockIdx.x * Tiles::kBN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int warp_row = warp / (Tiles::kBN / Tiles::kWarpCols) * Tiles::kWarpRows;
  const int warp_col = warp % (Tiles::kBN / Tiles::kWarpCols) * Tiles::kWarpCols;
  const int tiles_per_group = (p.group + kTileK - 1) / kTileK, tiles = p.groups * tiles_per_group;

  uint4 a_next[Tiles::kAFetches], w_next[Tiles::kWFetches];
  auto fetch = [&](int tile) {
    const int group = tile / tiles_per_group;
    const int k0 = group * p.group + tile % tiles_per_group * kTileK, end = (group + 1) * p.group;
#pragma unroll
    for (int i = 0; i < Tiles::kAFetches; ++i) {
      const int chunk = threadIdx.x + i * Tiles::kThreads;
      if (chunk < Tiles::kAChunks) a_next[i] = FetchActivations(p, m0 + chunk / kChunksPerRow, k0 + chunk % kChunksPerRow * kChunk, end);
    }
#pragma unroll
    for (int i = 0; i < Tiles::kWFetches; ++i) {
      const int chunk = threadIdx.x + i * Tiles::kThreads;
      if (chunk < Tiles::kWChunks) w_next[i] = FetchWeights<kBits>(p, n0 + chunk / kChunksPerRow, k0 + chunk % kChunksPerRow * kChunk, end);
    }
  };
  auto stash = [&] {
#pragma unroll
    for (int i = 0; i < Tiles::kAFetches; ++i) {
      const int chunk = threadIdx.x + i * Tiles::kThreads;
      if (chunk < Tiles::kAChunks) {
        *reinterpret_cast<uint4*>(a_tile + chunk / kChunksPerRow * kRowBytes + chunk % kChunksPerRow * kChunk) = a_next[i];
      }
    }
#pragma unroll
    for (int i = 0; i < Tiles::kWFetches; ++i) {
      const int chunk = threadIdx.x + i * Tiles::kThreads;
      if (chunk < Tiles::kWChunks) {
        *reinterpret_cast<uint4*>(w_tile + chunk / kChunksPerRow * kRowBytes + chunk % kChunksPerRow * kChunk) = w_next[i];
      }
    }
  };

  int dots[Tiles::kMmaRows][Tiles::kMmaCols][4] = {};
  float sums[Tiles::kMmaRows][Tiles::kMmaCols][4] = {};
  fetch(0);
  stash();
  __syncthreads();
  for (int tile = 0; tile < tiles; ++tile) {
    if (tile + 1 < tiles) fetch(tile + 1);
    uint32_t a[Tiles::kMmaRows][4], b[Tiles::kMmaCols][2];
#pragma unroll
    for (int mt = 0; mt < Tiles::kMmaRows; ++mt) {
      const int row = warp_row + mt * 16 + g;
      a[mt][0] = SharedWord(a_tile, row, 4 * t);
      a[mt][1] = SharedWord(a_tile, row + 8, 4 * t);
      a[mt][2] = SharedWord(a_tile, row, 16 + 4 * t);
      a[mt][3] = SharedWord(a_tile, row + 8, 16 + 4 * t);
    }
#pragma unroll
    for (int nt = 0; nt < Tiles::kMmaCols; ++nt) {
      const int channel = warp_col + nt * 8 + g;
      b[nt][0] = SharedWord(w_tile, channel, 4 * t);
      b[nt][1] = SharedWord(w_tile, channel, 16 + 4 * t);
    }
#pragma unroll
    for (int mt = 0; mt < Tiles::kMmaRows; ++mt) {
#pragma unroll
      for (int nt = 0; nt < Tiles::kMmaCols; ++nt) Mma(dots[mt][nt], a[mt], b[nt]);
    }
    if ((tile + 1) % tiles_per_group == 0) {  // the group is complete: scale its exact sums
      const int group = tile / tiles_per_group;
#pragma unroll
      for (int nt = 0; nt < Tiles::kMmaCols; ++nt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int channel = n0 + warp_col + nt * 8 + 2 * t + half;
          const float scale = channel < p.n ? __ldg(p.weight_scales + static_cast<int64_t>(channel) * p.groups + group) : 0.0f;
#pragma unroll
          for (int mt = 0; mt < Tiles::kMmaRows; ++mt) {
#pragma unroll
            for (int i = half; i < 4; i += 2) {
              sums[mt][nt][i] += scale * static_cast<float>(dots[mt][nt][i]);
              dots[mt][nt][i] = 0;
            }
          }
        }
      }
    }
    __syncthreads();
    if (tile + 1 < tiles) {
      stash();
      __syncthreads();
    }
  }

  const T* token_scales = static_cast<const T*>(p.token_scales);
  T* y = static_cast<T*>(p.y);
#pragma unroll
  for (int mt = 0; mt < Tiles::kMmaRows; ++mt) {
#pragma unroll
    for (int upper = 0; upper < 2; ++upper) {
      const int row = m0 + warp_row + mt * 16 + g + 8 * upper;
      if (row >= p.rows) continue;
      const float token_scale = ToFloat(token_scales[row]);
#pragma unroll
      for (int nt = 0; nt < Tiles::kMmaCols; ++nt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int channel = n0 + warp_col + nt * 8 + 2 * t + half;
          if (channel >= p.n) continue;
          const float bias = p.bias == nullptr ? 0.0f : p.bias[channel];
          y[static_cast<int64_t>(row) * p.n + channel] = FromFloat<T>(token_scale * sums[mt][nt][2 * upper + half] + bias);
        }
      }
    }
  }
}

template <int kBits, typename T, typename Tiles>
const char* Launch(const Problem& p, cudaStream_t stream) {
  const dim3 grid((p.n + Tiles::kBN - 1) / Tiles::kBN, (p.rows + Tiles::kBM - 1) / Tiles::kBM);
  if (grid.y > 65535) return "too many rows for one launch";
  QMatMulTiles<kBits, T, Tiles><<<grid, Tiles::kThreads, 0, stream>>>(p);
  return LaunchError();
}

template <int kBits, typename T>
const char* LaunchForRows(const Problem& p, cudaStream_t stream) {
  return p.rows <= 64 ? Launch<kBits, T, DecodeTiling>(p, stream) : Launch<kBits, T, PrefillTiling>(p, stream);
}

template <typename T>
const char* LaunchForBits(const Problem& p, int64_t bits, cudaStream_t stream) {
  if (bits == 4) return LaunchForRows<4, T>(p, stream);
  if (bits == 6) return LaunchForRows<6, T>(p, stream);
  return LaunchForRows<8, T>(p, stream);
}

}  // namespace

}  // namespace oq::cuda

OQ_EXPORT const char* OqCudaQMatMul(const int8_t* codes, const void* token_scales, const uint8_t* weight,
                                    const float* weight_scales, const float* bias, void* y, int64_t rows,
                                    int64_t k, int64_t n, int64_t groups, int64_t bits, int float16, void* stream) {
  using oq::cuda::Failure;
  if (bits != 8 && bits != 6 && bits != 4) return Failure("QMatMul", "bits must be 8, 6 or 4");
  if (k <= 0 || groups <= 0 || k % groups != 0) return Failure("QMatMul", "groups must divide in_features");
  constexpr int64_t kLimit = int64_t{1} << 30;  // keeps the kernel's int index arithmetic in range
  if (rows >= kLimit || k >= kLimit || n >= kLimit) return Failure("QMatMul", "tensor too large");
  if (rows == 0 || n == 0) return nullptr;
  const oq::cuda::Problem problem{codes, token_scales, weight, weight_scales, bias, y,
                                  static_cast<int>(rows), static_cast<int>(k), static_cast<int>(n),
                                  static_cast<int>(groups), static_cast<int>(k / groups),
                                  static_cast<int64_t>(oq::PackedRowBytes(bits, k))};
  auto* cuda_stream = static_cast<cudaStream_t>(stream);
  return Failure("QMatMul", float16 ? oq::cuda::LaunchForBits<__half>(problem, bits, cuda_stream)
                                    : oq::cuda::LaunchForBits<float>(problem, bits, cuda_stream));
}
