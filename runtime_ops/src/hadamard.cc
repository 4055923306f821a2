// oq.Hadamard (CPU): the normalized Walsh-Hadamard transform on the last axis.
//
// Y = X · H_n with H_n = H_K ⊗ H_m, m = n / K a power of two (K = 1 without the optional
// H_K input; oqcompile passes the same K x K factor its portable graph uses). For one row x,
// viewed row-major as X [K, m]:  x (H_K ⊗ H_m) = vec(H_Kᵀ X H_m), where X H_m is the fast
// butterfly transform of every row (m log m additions, then a 1/sqrt(m) scale) and the
// K x K factor is a small dense product. Rows run in parallel on the session's threads;
// float16 rows are transformed in float.
#include <cmath>
#include <vector>

#include "ops.h"

namespace oq {

namespace {

void FastWalshHadamard(float* data, int64_t length) {
  for (int64_t half = 1; half < length; half *= 2) {
    for (int64_t start = 0; start < length; start += 2 * half) {
      for (int64_t i = start; i < start + half; ++i) {
        const float a = data[i], b = data[i + half];
        data[i] = a + b;
        data[i + half] = a - b;
      }
    }
  }
}

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
  ParallelForRows(context, static_cast<size_t>(rows), kRowsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> blocks(static_cast<size_t>(n)), out(static_cast<size_t>(n));
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t i = 0; i < n; ++i) blocks[i] = ToFloat(x[row * n + i]);
      for (int64_t b = 0; b < k; ++b) FastWalshHadamard(blocks.data() + b * m, m);
      if (factor == nullptr) {
        for (int64_t i = 0; i < n; ++i) y[row * n + i] = FromFloat<T>(blocks[i] * scale);
        continue;
      }
      for (int64_t a = 0; a < k; ++a) {  // Y[a, :] = Σ_b H_K[b, a] · (X H_m)[b, :]
        float* target = out.data() + a * m;
        for (int64_t j = 0; j < m; ++j) target[j] = 0.0f;
        for (int64_t b = 0; b < k; ++b) {
          const float weight = factor[b * k + a] * scale;
          const float* source = blocks.data() + b * m;
          for (int64_t j = 0; j < m; ++j) target[j] += weight * source[j];
        }
      }
      for (int64_t i = 0; i < n; ++i) y[row * n + i] = FromFloat<T>(out[i]);
    }
  });
  return nullptr;
}

template struct HadamardKernel<float>;
template struct HadamardKernel<Half>;

}  // namespace oq
