// oq.QuantizePerToken (CUDA): one thread block per token, the same arithmetic as quantize.cc.
//
// Dynamic: s_t = max(round_T(absmax_t · round_T(clip / (2^(bits-1) - 1))), tiny_T), the block's
// absmax reduced through warp shuffles (on the float bits, as the CPU op does); static: s = round_T(static_scale). Codes are
// clip(round_half_even(x / s)) (codes.h), with IEEE division (the library is built without
// fast math, so the codes equal the CPU op's and the portable graph's).
#include "../codes.h"
#include "cuda_kernels.h"
#include "device.cuh"

namespace oq::cuda {

namespace {

constexpr int kMaxThreads = 256;

// The largest of each thread's value, in every thread of the block.
__device__ int BlockMax(int value) {
  __shared__ int warp_max[kMaxThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value = max(value, __shfl_xor_sync(0xffffffffu, value, offset));
  const int warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (threadIdx.x % 32 == 0) warp_max[warp] = value;
  __syncthreads();
  value = warp_max[0];
  for (int w = 1; w < warps; ++w) value = max(value, warp_max[w]);
  return value;
}

template <typename T>
__device__ float RoundTo(float value) {
  return ToFloat(FromFloat<T>(value));
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) QuantizeRows(const T* __restrict__ x, int8_t* __restrict__ codes,
                                                             T* __restrict__ scales, int channels, float factor,
                                                             float fixed, float tiny, float low, float high) {
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * channels;
  float scale = fixed;
  if (scale == 0.0f) {  // absmax on the magnitude bits, like quantize.cc (a NaN wins and makes the scale NaN)
    int absmax_bits = 0;
    for (int j = threadIdx.x; j < channels; j += blockDim.x) {
      absmax_bits = max(absmax_bits, __float_as_int(ToFloat(x[offset + j])) & 0x7fffffff);
    }
    const float rounded = RoundTo<T>(__int_as_float(BlockMax(absmax_bits)) * factor);
    scale = rounded < tiny ? tiny : rounded;
  }
  if (threadIdx.x == 0) scales[blockIdx.x] = FromFloat<T>(scale);
  for (int j = threadIdx.x; j < channels; j += blockDim.x) {
    codes[offset + j] = static_cast<int8_t>(static_cast<int>(RoundedCode(ToFloat(x[offset + j]) / scale, low, high)));
  }
}

template <typename T>
float RoundToHost(float value) {
  if constexpr (sizeof(T) == 2) {
    return __half2float(__float2half_rn(value));
  } else {
    return value;
  }
}

template <typename T>
const char* Launch(const void* x, int8_t* codes, void* scales, int64_t rows, int channels, int64_t bits, float clip,
                   float static_scale, cudaStream_t stream) {
  const float high = static_cast<float>((1 << (bits - 1)) - 1), low = -high - 1.0f;
  const float factor = RoundToHost<T>(clip / high);
  const float fixed = static_scale > 0.0f ? RoundToHost<T>(static_scale) : 0.0f;
  const float tiny = sizeof(T) == 2 ? 6.103515625e-05f : 1.17549435e-38f;  // smallest normal T
  const int threads = static_cast<int>(std::min<int64_t>(kMaxThreads, (int64_t{channels} + 31) / 32 * 32));
  QuantizeRows<T><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
      static_cast<const T*>(x), codes, static_cast<T*>(scales), channels, factor, fixed, tiny, low, high);
  return LaunchError();
}

}  // namespace

}  // namespace oq::cuda

OQ_EXPORT const char* OqCudaQuantizePerToken(const void* x, int8_t* codes, void* scales, int64_t rows,
                                             int64_t channels, int64_t bits, float clip, float static_scale,
                                             int float16, void* stream) {
  using oq::cuda::Failure;
  if (bits != 8 && bits != 6 && bits != 4) return Failure("QuantizePerToken", "bits must be 8, 6 or 4");
  if (!(clip > 0.0f) || static_scale < 0.0f) {
    return Failure("QuantizePerToken", "clip must be positive and static_scale not negative");
  }
  if (channels <= 0) return Failure("QuantizePerToken", "X needs a non-empty last axis");
  if (channels >= (int64_t{1} << 31) || rows >= (int64_t{1} << 31)) return Failure("QuantizePerToken", "tensor too large");
  if (rows == 0) return nullptr;
  auto* cuda_stream = static_cast<cudaStream_t>(stream);
  const int count = static_cast<int>(channels);
  return Failure("QuantizePerToken",
                 float16 ? oq::cuda::Launch<__half>(x, codes, scales, rows, count, bits, clip, static_scale, cuda_stream)
                         : oq::cuda::Launch<float>(x, codes, scales, rows, count, bits, clip, static_scale, cuda_stream));
}
