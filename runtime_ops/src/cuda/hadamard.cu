// oq.Hadamard (CUDA): Y = X · (H_K ⊗ H_m) on the last axis, one thread block per row.
//
// The row, viewed as Z [K, m], is staged in shared memory as float. The butterfly stages
// of H_m (strides 1, 2, ..., m/2, in any order: they commute) run in passes of up to 3:
// a pass of stride s moves pencils of e = min(8, m/s) values s apart into registers, does
// the stages of strides s, 2s, ..., s·e/2 there, and writes them back; log_8(m) passes in all.
// Pencils never cross the K sub-rows of m values. Then, as in hadamard.cc,
//   Y[a, j] = Σ_b (H_K[b, a] / √m) · (Z H_m)[b, j],
// one column j per thread: for K ≤ 64 with the column in registers and H_K / √m staged in
// shared memory, for larger K (oqcompile passes the smallest K, 12..36 at LLM widths, but
// other producers may not) straight from shared Z and the global H_K. K = 1: Y = Z H_m / √m.
// Shared-memory rows are padded by one word per 32, which spreads each pass's pencils over
// the banks. A row must fit the block's shared memory (about 56000 floats on sm_90, 40000 on
// sm_80); longer rows return an error that says so.
#include <cmath>
#include <string>

#include "cuda_kernels.h"
#include "device.cuh"

namespace oq::cuda {

namespace {

constexpr int kPencil = 8;        // values per thread per pass (3 butterfly stages)
constexpr int kRegisterFactor = 64;  // largest K whose column of Z is held in registers
constexpr int kMaxThreads = 256;
constexpr size_t kDefaultSharedBytes = 48 * 1024;  // dynamic shared memory a block gets without opting in

__host__ __device__ constexpr int Padded(int index) { return index + (index >> 5); }

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) HadamardRows(const T* __restrict__ x, T* __restrict__ y, int n, int m,
                                                             const float* __restrict__ factor, int k, float scale) {
  extern __shared__ float shared[];
  float* row = shared;               // Z, padded
  float* h = shared + Padded(n);     // H_K / √m, row-major [b, a], for K ≤ kRegisterFactor
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) row[Padded(i)] = ToFloat(x[offset + i]);
  if (factor != nullptr && k <= kRegisterFactor) {
    for (int i = threadIdx.x; i < k * k; i += blockDim.x) h[i] = factor[i] * scale;
  }
  __syncthreads();

  for (int stride = 1; stride < m; stride *= kPencil) {
    const int length = min(kPencil, m / stride);
    for (int pencil = threadIdx.x; pencil < n / length; pencil += blockDim.x) {
      const int base = pencil / stride * stride * length + pencil % stride;
      float v[kPencil];
#pragma unroll
      for (int j = 0; j < kPencil; ++j) {
        if (j < length) v[j] = row[Padded(base + j * stride)];
      }
#pragma unroll
      for (int half = 1; half < kPencil; half *= 2) {
#pragma unroll
        for (int j = 0; j < kPencil; ++j) {
          if (half < length && j < length && (j & half) == 0) {
            const float a = v[j], b = v[j + half];
            v[j] = a + b;
            v[j + half] = a - b;
          }
        }
      }
#pragma unroll
      for (int j = 0; j < kPencil; ++j) {
        if (j < length) row[Padded(base + j * stride)] = v[j];
      }
    }
    __syncthreads();
  }

  if (factor == nullptr) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) y[offset + i] = FromFloat<T>(row[Padded(i)] * scale);
    return;
  }
  if (k > kRegisterFactor) {
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
      for (int a = 0; a < k; ++a) {
        float sum = 0.0f;
        for (int b = 0; b < k; ++b) sum += __ldg(factor + b * k + a) * row[Padded(b * m + j)];
        y[offset + static_cast<int64_t>(a) * m + j] = FromFloat<T>(sum * scale);
      }
    }
    return;
  }
  for (int j = threadIdx.x; j < m; j += blockDim.x) {
    float column[kRegisterFactor];
#pragma unroll
    for (int b = 0; b < kRegisterFactor; ++b) {
      if (b < k) column[b] = row[Padded(b * m + j)];
    }
    for (int a = 0; a < k; ++a) {
      float sum = 0.0f;
#pragma unroll
      for (int b = 0; b < kRegisterFactor; ++b) {
        if (b < k) sum += h[b * k + a] * column[b];
      }
      y[offset + static_cast<int64_t>(a) * m + j] = FromFloat<T>(sum);
    }
  }
}

template <typename T>
const char* Launch(const void* x, void* y, int64_t rows, int n, int m, const float* h_k, int k, cudaStream_t stream) {
  const size_t shared = (Padded(n) + (h_k == nullptr || k > kRegisterFactor ? 0 : k * k)) * sizeof(float);
  if (shared > kDefaultSharedBytes) {  // beyond the default a block must opt in, up to the device's limit
    int device = 0, available = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&available, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
      return LaunchError();
    }
    if (shared > static_cast<size_t>(available)) {
      static thread_local std::string message;
      message = "a row of " + std::to_string(n) + " values needs " + std::to_string(shared / 1024) +
                " KiB of shared memory, this GPU gives a block " + std::to_string(available / 1024) + " KiB";
      return message.c_str();
    }
    if (cudaFuncSetAttribute(HadamardRows<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(shared)) != cudaSuccess) {
      return LaunchError();
    }
  }
  const int threads = std::min(kMaxThreads, std::max(32, (n / kPencil + 31) / 32 * 32));
  HadamardRows<T><<<static_cast<unsigned>(rows), threads, shared, stream>>>(
      static_cast<const T*>(x), static_cast<T*>(y), n, m, h_k, k, 1.0f / std::sqrt(static_cast<float>(m)));
  return LaunchError();
}

}  // namespace

}  // namespace oq::cuda

OQ_EXPORT const char* OqCudaHadamard(const void* x, void* y, int64_t rows, int64_t n, const float* h_k, int64_t k,
                                     int float16, void* stream) {
  using oq::cuda::Failure;
  if (h_k == nullptr) k = 1;
  if (k < 1) return Failure("Hadamard", "K must be positive");
  if (n <= 0 || n % k != 0 || ((n / k) & (n / k - 1)) != 0) return Failure("Hadamard", "n must be K times a power of two");
  if (n > (1 << 24) || rows >= (int64_t{1} << 31)) return Failure("Hadamard", "tensor too large");
  if (rows == 0) return nullptr;
  const int m = static_cast<int>(n / k);
  auto* cuda_stream = static_cast<cudaStream_t>(stream);
  return Failure("Hadamard",
                 float16 ? oq::cuda::Launch<__half>(x, y, rows, static_cast<int>(n), m, h_k, static_cast<int>(k), cuda_stream)
                         : oq::cuda::Launch<float>(x, y, rows, static_cast<int>(n), m, h_k, static_cast<int>(k), cuda_stream));
}
