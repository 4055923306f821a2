// oq.Hadamard (CPU): the normalized Walsh-Hadamard transform on the last axis.
//
// Inputs: X [..., n] float; optional H_K [K, K] float, an orthonormal Hadamard matrix
// (oqcompile passes the same factor its portable graph uses). Output: Y = X · H_n with
// H_n = H_K ⊗ H_m, m = n / K a power of two (K = 1 without H_K). For one row x, viewed
// row-major as X [K, m]:  x (H_K ⊗ H_m) = vec(H_Kᵀ X H_m), where X H_m is the fast
// butterfly transform of every row (m log m additions, then a 1/sqrt(m) scale) and the
// K x K factor is a small dense product.
#include "hadamard.h"

#include <cmath>
#include <string>
#include <vector>

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

OrtStatusPtr Error(const std::string& message) {
  return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, ("oq.Hadamard: " + message).c_str());
}

}  // namespace

OrtStatusPtr HadamardOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  *kernel = new HadamardKernel(api, info);
  return nullptr;
}

OrtStatusPtr HadamardKernel::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  const Ort::ConstValue input = context.GetInput(0);
  const std::vector<int64_t> shape = input.GetTensorTypeAndShapeInfo().GetShape();
  if (shape.empty()) return Error("X must have at least one axis");
  const int64_t n = shape.back();
  int64_t k = 1;
  const float* factor = nullptr;
  if (context.GetInputCount() > 1) {
    const Ort::ConstValue h = context.GetInput(1);
    if (h != nullptr) {
      const std::vector<int64_t> h_shape = h.GetTensorTypeAndShapeInfo().GetShape();
      if (h_shape.size() != 2 || h_shape[0] != h_shape[1]) return Error("H_K must be a square matrix");
      k = h_shape[0];
      factor = h.GetTensorData<float>();
    }
  }
  if (k <= 0 || n % k != 0) return Error("the last axis (" + std::to_string(n) + ") is not a multiple of K");
  const int64_t m = n / k;
  if (m <= 0 || (m & (m - 1)) != 0) return Error("n / K = " + std::to_string(m) + " is not a power of two");

  Ort::UnownedValue output = context.GetOutput(0, shape);
  const float* x = input.GetTensorData<float>();
  float* y = output.GetTensorMutableData<float>();
  const int64_t rows = static_cast<int64_t>(input.GetTensorTypeAndShapeInfo().GetElementCount()) / n;
  const float scale = 1.0f / std::sqrt(static_cast<float>(m));
  std::vector<float> work(static_cast<size_t>(n));
  for (int64_t row = 0; row < rows; ++row) {
    const float* source = x + row * n;
    float* target = y + row * n;
    float* blocks = factor == nullptr ? target : work.data();
    for (int64_t i = 0; i < n; ++i) blocks[i] = source[i];
    for (int64_t b = 0; b < k; ++b) {
      FastWalshHadamard(blocks + b * m, m);
    }
    if (factor == nullptr) {
      for (int64_t i = 0; i < n; ++i) target[i] *= scale;
      continue;
    }
    for (int64_t a = 0; a < k; ++a) {  // Y[a, :] = Σ_b H_K[b, a] · (X H_m)[b, :]
      float* out = target + a * m;
      for (int64_t j = 0; j < m; ++j) out[j] = 0.0f;
      for (int64_t b = 0; b < k; ++b) {
        const float weight = factor[b * k + a] * scale;
        const float* in = blocks + b * m;
        for (int64_t j = 0; j < m; ++j) out[j] += weight * in[j];
      }
    }
  }
  return nullptr;
}

}  // namespace oq
