// oq.QuantizePerToken (CPU): symmetric per-token (dynamic) or static quantization to int8 codes.
//
// Dynamic: s_t = max(absmax_t · c, tiny) per token (or per group of channels of a token), with
// c = clip / (2^(bits-1) - 1) (a float32 division) rounded to T, the product rounded to T, tiny the smallest normal T, exactly like the portable graph's
// Abs → ReduceMax → Mul → Max. Static (static_scale > 0, OutlierTune's scale-free codes use 1):
// s = static_scale. Codes: clip(round_half_even(x / s), -2^(bits-1), 2^(bits-1) - 1), the
// QuantizeLinear (+ Clip for 6 bits) of the portable graph.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "codes.h"
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

// codes_j = clip(round_half_even(x_j / scale), low, high) (codes.h).
template <typename T>
void QuantizeRow(const T* __restrict x, int64_t count, float scale, float low, float high, int8_t* __restrict codes) {
  for (int64_t j = 0; j < count; ++j) {
    codes[j] = static_cast<int8_t>(static_cast<int32_t>(RoundedCode(ToFloat(x[j]) / scale, low, high)));
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
OrtStatusPtr QuantizePerTokenKernel<T>::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  QuantizeShape shape;
  if (OrtStatusPtr status = ReadQuantizeShape(context, *this, shape)) return status;
  const int64_t channels = shape.channels, group = shape.group, groups = channels / group;
  const T* x = context.GetInput(0).GetTensorData<T>();
  int8_t* codes = context.GetOutput(0, shape.codes_shape).GetTensorMutableData<int8_t>();
  T* scales = context.GetOutput(1, shape.scales_shape).GetTensorMutableData<T>();

  const float high = static_cast<float>((1 << (bits - 1)) - 1), low = -high - 1.0f;
  const float factor = RoundToT<T>(clip / high);
  const float fixed = static_scale > 0.0f ? RoundToT<T>(static_scale) : 0.0f;
  ParallelForRows(context, static_cast<size_t>(shape.rows), kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t at = begin * groups; at < end * groups; ++at) {  // group `at` of all rows' groups
      const T* source = x + at * group;
      float scale = fixed;
      if (scale == 0.0f) scale = std::max(RoundToT<T>(AbsMax(source, group) * factor), SmallestNormal<T>());
      scales[at] = FromFloat<T>(scale);
      QuantizeRow(source, group, scale, low, high, codes + at * group);
    }
  });
  return nullptr;
}

template struct QuantizePerTokenKernel<float>;
template struct QuantizePerTokenKernel<Half>;

}  // namespace oq
