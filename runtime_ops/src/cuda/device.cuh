// Helpers shared by the oq CUDA kernels: element conversions and the error text they return.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

namespace oq::cuda {

__device__ __forceinline__ float ToFloat(float value) { return value; }
__device__ __forceinline__ float ToFloat(__half value) { return __half2float(value); }

template <typename T>
__device__ __forceinline__ T FromFloat(float value) {
  if constexpr (sizeof(T) == 2) {
    return __float2half_rn(value);
  } else {
    return value;
  }
}

// The message of the launch just made (or of an earlier asynchronous error), null if none.
inline const char* LaunchError() {
  const cudaError_t error = cudaGetLastError();
  return error == cudaSuccess ? nullptr : cudaGetErrorString(error);
}

// What an entry point returns: null, or "oq.<op> (CUDA): <message>" in a per-thread buffer
// that stays valid until the thread's next failure.
inline const char* Failure(const char* op, const char* message) {
  if (message == nullptr) return nullptr;
  thread_local std::string text;
  text = std::string("oq.") + op + " (CUDA): " + message;
  return text.c_str();
}

}  // namespace oq::cuda
