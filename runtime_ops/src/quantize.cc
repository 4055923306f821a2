// oq.QuantizePerToken (CPU): symmetric per-token (dynamic) or static quantization to int8 codes.
//
// Dynamic: s_t = max(absmax_t · c, tiny) with c = clip / (2^(bits-1) - 1) (a float32 division)
// rounded to T, the product rounded to T, tiny the smallest normal T, exactly like the portable graph's
// Abs → ReduceMax → Mul → Max. Static (static_scale > 0, OutlierTune's scale-free codes use 1):
// s = static_scale. Codes: clip(round_half_even(x / s), -2^(bits-1), 2^(bits-1) - 1), the
// QuantizeLinear (+ Clip for 6 bits) of the portable graph.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "ops.h"

namespace oq {

namespace {

constexpr size_t kRowsPerTask = 16;

template <typename T>
float SmallestNormal() {
  if constexpr (std::is_same_v<T, float>) {
    return std::numeric_limits<float>::min();
  } else {
    return 6.103515625e-05f;  // 2^-14
  }
}

template <typename T>
float RoundToT(float value) {
  return ToFloat(FromFloat<T>(value));
}

// codes_j = clip(round_half_even(x_j / scale), low, high). Clipping first to the integer bounds
// gives the same codes; inside [-128, 127], adding and subtracting 1.5 · 2^23 rounds half to even
// (the default rounding mode) in a form the compiler vectorizes.
template <typename T>
void QuantizeRow(const T* __restrict x, int64_t count, float scale, float low, float high, int8_t* __restrict codes) {
  constexpr float kRoundingShift = 12582912.0f;
  for (int64_t j = 0; j < count; ++j) {
    const float clipped = std::min(std::max(ToFloat(x[j]) / scale, low), high);
    codes[j] = static_cast<int8_t>(static_cast<int32_t>((clipped + kRoundingShift) - kRoundingShift));
  }
}

// max_j |x_j| as float. The magnitudes are compared as the integers of their bits (the same
// order for non-negative floats), a max reduction the compiler vectorizes.
template <typename T>
float AbsMax(const T* x, int64_t count) {
  int32_t largest = 0;
  for (int64_t j = 0; j < count; ++j) {
    const float value = ToFloat(x[j]);
    int32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    largest = std::max(largest, bits & 0x7fffffff);
  }
  float absmax;
  std::memcpy(&absmax, &largest, sizeof absmax);
  return absmax;
}

}  // namespace

template <typename T>
OrtStatusPtr InitializeKernel(const OrtKernelInfo* info, QuantizePerTokenKernel<T>& kernel) {
  Ort::ConstKernelInfo node(info);
  try {
    kernel.bits = node.GetAttribute<int64_t>("bits");
  } catch (const Ort::Exception&) {
    return InvalidArgument("QuantizePerToken", "the attribute bits (8, 6 or 4) is required");
  }
  kernel.clip = AttributeOr(node, "clip", kernel.clip);
  kernel.static_scale = AttributeOr(node, "static_scale", kernel.static_scale);
  if (OrtStatusPtr status = CheckCodeBits("QuantizePerToken", kernel.bits)) return status;
  if (!(kernel.clip > 0.0f) || kernel.static_scale < 0.0f) {
    return InvalidArgument("QuantizePerToken", "clip must be positive and static_scale not negative");
  }
  return nullptr;
}

template <typename T>
OrtStatusPtr QuantizePerTokenKernel<T>::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  const Ort::ConstValue input = context.GetInput(0);
  const auto info = input.GetTensorTypeAndShapeInfo();
  std::vector<int64_t> shape = info.GetShape();
  if (shape.empty() || shape.back() == 0) {
    return InvalidArgument("QuantizePerToken", "X needs a non-empty last axis, got " + ShapeText(shape));
  }
  const int64_t channels = shape.back();
  const int64_t rows = static_cast<int64_t>(info.GetElementCount()) / channels;
  const T* x = input.GetTensorData<T>();
  int8_t* codes = context.GetOutput(0, shape).GetTensorMutableData<int8_t>();
  shape.back() = 1;
  T* scales = context.GetOutput(1, shape).GetTensorMutableData<T>();

  const float high = static_cast<float>((1 << (bits - 1)) - 1), low = -high - 1.0f;
  const float factor = RoundToT<T>(clip / high);
  const float fixed = static_scale > 0.0f ? RoundToT<T>(static_scale) : 0.0f;
  ParallelForRows(context, static_cast<size_t>(rows), kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* source = x + row * channels;
      float scale = fixed;
      if (scale == 0.0f) scale = std::max(RoundToT<T>(AbsMax(source, channels) * factor), SmallestNormal<T>());
      scales[row] = FromFloat<T>(scale);
      QuantizeRow(source, channels, scale, low, high, codes + row * channels);
    }
  });
  return nullptr;
}

template OrtStatusPtr InitializeKernel(const OrtKernelInfo*, QuantizePerTokenKernel<float>&);
template OrtStatusPtr InitializeKernel(const OrtKernelInfo*, QuantizePerTokenKernel<Half>&);
template struct QuantizePerTokenKernel<float>;
template struct QuantizePerTokenKernel<Half>;

}  // namespace oq
