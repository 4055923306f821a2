// oq.Hadamard (CPU): the normalized Walsh-Hadamard transform on the last axis.
//
// Y = X · H_n with H_n = H_K ⊗ H_m, m = n / K a power of two (K = 1 without the optional
// H_K input; oqcompile passes the same K x K factor its portable graph uses). For one row x,
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
  const Ort::ConstValue input = context.GetInput(0);
  const std::vector<int64_t> shape = input.GetTensorTypeAndShapeInfo().GetShape();
  if (shape.empty()) return InvalidArgument("Hadamard", "X must have at least one axis");
  const int64_t n = shape.back();
  int64_t k = 1;
  const float* factor = nullptr;
  if (context.GetInputCount() > 1) {
    const Ort::ConstValue h = context.GetInput(1);
    if (h != nullptr) {
      const std::vector<int64_t> h_shape = h.GetTensorTypeAndShapeInfo().GetShape();
      if (h_shape.size() != 2 || h_shape[0] != h_shape[1]) {
        return InvalidArgument("Hadamard", "H_K must be a square matrix, got " + ShapeText(h_shape));
      }
      k = h_shape[0];
      factor = h.GetTensorData<float>();
    }
  }
  if (k <= 0 || n % k != 0) {
    return InvalidArgument("Hadamard", "the last axis (" + std::to_string(n) + ") is not a multiple of K = " +
                                           std::to_string(k));
  }
  const int64_t m = n / k;
  if (m <= 0 || (m & (m - 1)) != 0) {
    return InvalidArgument("Hadamard", "n / K = " + std::to_string(m) + " is not a power of two");
  }

  Ort::UnownedValue output = context.GetOutput(0, shape);
  const T* x = input.GetTensorData<T>();
  T* y = output.GetTensorMutableData<T>();
  const int64_t rows = static_cast<int64_t>(input.GetTensorTypeAndShapeInfo().GetElementCount()) / n;
  const float scale = 1.0f / std::sqrt(static_cast<float>(m));
  std::vector<float> scaled_factor;  // H_K / sqrt(m), transposed products read it as [b, a]
  if (factor != nullptr) {
    scaled_factor.assign(factor, factor + k * k);
    for (float& value : scaled_factor) value *= scale;
  }
  const float* scaled = factor == nullptr ? nullptr : scaled_factor.data();
  ParallelForRows(context, static_cast<size_t>(rows), kRowsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(n));
    if constexpr (std::is_same_v<T, float>) {  // transform the output rows in place
      std::copy(x + begin * n, x + end * n, y + begin * n);
      isa.hadamard_rows(y + begin * n, end - begin, k, m, scaled, scale, scratch.data());
    } else {  // one row at a time through float
      std::vector<float> row(static_cast<size_t>(n));
      for (int64_t r = begin; r < end; ++r) {
        std::transform(x + r * n, x + (r + 1) * n, row.begin(), [](T value) { return ToFloat(value); });
        isa.hadamard_rows(row.data(), 1, k, m, scaled, scale, scratch.data());
        std::transform(row.begin(), row.end(), y + r * n, [](float value) { return FromFloat<T>(value); });
      }
    }
  });
  return nullptr;
}

template struct HadamardKernel<float>;
template struct HadamardKernel<Half>;

}  // namespace oq
