// oq.Hadamard (CPU): the normalized Walsh-Hadamard transform on the last axis.
//
// Y = X · H_n with H_n = H_K ⊗ H_m, m = n / K a power of two (K = 1 without the optional
// H_K input; oqcompile passes the smallest K, which its portable graph folds into a larger
// left factor H_K ⊗ H_{2^j} of the same matrix). For one row x,
// viewed row-major as X [K, m]:  x (H_K ⊗ H_m) = vec(H_Kᵀ X H_m), where X H_m is the fast
// butterfly transform of every row (m log m additions, then a 1/sqrt(m) scale) and the
// K x K factor is a small dense product (hadamard_kernels.h, vectorized per instruction set).
// Rows run in parallel on the session's threads; float16 rows are transformed in float.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops.h"

namespace oq {

namespace {

constexpr size_t kRowsPerTask = 16;

}  // namespace

template <typename T>
OrtStatusPtr HadamardKernel<T>::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  HadamardShape shape;
  if (OrtStatusPtr status = ReadHadamardShape(context, shape)) return status;
  const int64_t n = shape.n, k = shape.k, m = shape.m, rows = shape.rows;
  const float* factor = shape.factor;
  const T* x = context.GetInput(0).GetTensorData<T>();
  T* y = context.GetOutput(0, shape.shape).GetTensorMutableData<T>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(m));
  std::vector<float> scaled_factor;  // H_K / sqrt(m), transposed products read it as [b, a]
  if (factor != nullptr) {
    scaled_factor.assign(factor, factor + k * k);
    for (float& value : scaled_factor) value *= scale;
  }
  const float* scaled = factor == nullptr ? nullptr : scaled_factor.data();
  ParallelForRows(context, static_cast<size_t>(rows), kRowsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(n));
    if constexpr (std::is_same_v<T, float>) {
      isa.hadamard_rows(x + begin * n, y + begin * n, end - begin, k, m, scaled, scale, scratch.data());
    } else {  // one row at a time through float
      std::vector<float> row(static_cast<size_t>(n));
      for (int64_t r = begin; r < end; ++r) {
        std::transform(x + r * n, x + (r + 1) * n, row.begin(), [](T value) { return ToFloat(value); });
        isa.hadamard_rows(row.data(), row.data(), 1, k, m, scaled, scale, scratch.data());
        std::transform(row.begin(), row.end(), y + r * n, [](float value) { return FromFloat<T>(value); });
      }
    }
  });
  return nullptr;
}

template struct HadamardKernel<float>;
template struct HadamardKernel<Half>;

}  // namespace oq
