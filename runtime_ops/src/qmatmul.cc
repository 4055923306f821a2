// oq.QMatMul (CPU): integer matmul of activation codes with packed int8/int6/int4 weights.
//
// Y[t, n] = s_t · Σ_g w_scale[n, g] · Σ_{k ∈ g} a[t, k] · w[n, k] + bias[n] (see ops.h).
// The activation codes are widened once to int16 rows; the weights are unpacked to int16
// panels of kPanelChannels output channels inside each task, so packed weights stay packed
// in memory. Tasks are (row block, channel panel) pairs on the session's thread pool; the
// panel itself is the best ISA's (cpu_isa.h). Group sums are exact int32.
#include <algorithm>
#include <vector>

#include "ops.h"

namespace oq {

namespace {

constexpr size_t kPanelChannels = 32;
constexpr size_t kRowsPerTask = 512;

// Decodes one packed weight row of k codes (see ops.h) into int16.
void DecodeRow(const uint8_t* row, int64_t bits, size_t k, int16_t* out) {
  if (bits == 8) {
    for (size_t i = 0; i < k; ++i) out[i] = static_cast<int8_t>(row[i]);
  } else if (bits == 4) {
    for (size_t i = 0; i + 1 < k; i += 2) {
      const int byte = row[i / 2];
      out[i] = static_cast<int16_t>(((byte & 15) ^ 8) - 8);
      out[i + 1] = static_cast<int16_t>(((byte >> 4) ^ 8) - 8);
    }
    if (k % 2) out[k - 1] = static_cast<int16_t>(((row[k / 2] & 15) ^ 8) - 8);
  } else {
    for (size_t i = 0; i < k; i += 4) {
      const uint8_t* word = row + i / 4 * 3;
      const uint32_t bits24 = word[0] | (word[1] << 8) | (word[2] << 16);
      for (size_t j = 0; j < 4 && i + j < k; ++j) {
        out[i + j] = static_cast<int16_t>((((bits24 >> (6 * j)) & 63) ^ 32) - 32);
      }
    }
  }
}

// Spreads k contiguous codes into `groups` groups of `group` values, each zero-padded to `stride`.
void SpreadRow(const int16_t* codes, size_t groups, size_t group, size_t stride, int16_t* out) {
  for (size_t g = groups; g-- > 0;) {  // backwards: `codes` may be `out` itself
    std::copy_backward(codes + g * group, codes + (g + 1) * group, out + g * stride + group);
    std::fill(out + g * stride + group, out + (g + 1) * stride, int16_t{0});
  }
}

}  // namespace

template <typename T>
OrtStatusPtr ReadAttributes(const OrtKernelInfo* info, QMatMulKernel<T>& kernel) {
  Ort::ConstKernelInfo node(info);
  try {
    kernel.bits = node.GetAttribute<int64_t>("bits");
    kernel.in_features = node.GetAttribute<int64_t>("in_features");
  } catch (const Ort::Exception&) {
    return InvalidArgument("QMatMul", "the attributes bits and in_features are required");
  }
  if (kernel.bits != 8 && kernel.bits != 6 && kernel.bits != 4) {
    return InvalidArgument("QMatMul", "bits must be 8, 6 or 4, not " + std::to_string(kernel.bits));
  }
  if (kernel.in_features <= 0) return InvalidArgument("QMatMul", "in_features must be positive");
  kernel.isa = SelectCpuIsa(&kernel.isa_error);
  if (!kernel.isa_error.empty()) return InvalidArgument("QMatMul", kernel.isa_error);
  return nullptr;
}

template <typename T>
OrtStatusPtr QMatMulKernel<T>::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  const Ort::ConstValue codes = context.GetInput(0), token_scales = context.GetInput(1);
  const Ort::ConstValue weight = context.GetInput(2), weight_scales = context.GetInput(3);
  const Ort::ConstValue bias = context.GetInputCount() > 4 ? context.GetInput(4) : Ort::ConstValue{nullptr};
  const std::vector<int64_t> a_shape = codes.GetTensorTypeAndShapeInfo().GetShape();
  const std::vector<int64_t> w_shape = weight.GetTensorTypeAndShapeInfo().GetShape();
  const std::vector<int64_t> s_shape = weight_scales.GetTensorTypeAndShapeInfo().GetShape();
  const int64_t k = in_features;
  if (a_shape.empty() || a_shape.back() != k) {
    return InvalidArgument("QMatMul", "codes must end in in_features = " + std::to_string(k) + ", got " +
                                          ShapeText(a_shape));
  }
  const size_t rows = codes.GetTensorTypeAndShapeInfo().GetElementCount() / static_cast<size_t>(k);
  if (token_scales.GetTensorTypeAndShapeInfo().GetElementCount() != rows) {
    return InvalidArgument("QMatMul", "scales must hold one value per token (" + std::to_string(rows) + ")");
  }
  if (w_shape.size() != 2 || w_shape[1] != static_cast<int64_t>(PackedRowBytes(bits, k))) {
    return InvalidArgument("QMatMul", "packed weight must be [N, " + std::to_string(PackedRowBytes(bits, k)) +
                                          "] for int" + std::to_string(bits) + ", got " + ShapeText(w_shape));
  }
  const int64_t n = w_shape[0];
  if (s_shape.size() != 2 || s_shape[0] != n || s_shape[1] <= 0 || k % s_shape[1] != 0) {
    return InvalidArgument("QMatMul", "weight scales must be [N, G] with G dividing in_features, got " +
                                          ShapeText(s_shape));
  }
  if (bias != nullptr && bias.GetTensorTypeAndShapeInfo().GetElementCount() != static_cast<size_t>(n)) {
    return InvalidArgument("QMatMul", "bias must hold N = " + std::to_string(n) + " values");
  }
  std::vector<int64_t> y_shape = a_shape;
  y_shape.back() = n;
  T* y = context.GetOutput(0, y_shape).GetTensorMutableData<T>();

  const size_t groups = static_cast<size_t>(s_shape[1]), group = static_cast<size_t>(k) / groups;
  const size_t stride = (group + isa.width - 1) / isa.width * isa.width, row_length = groups * stride;
  const int8_t* a = codes.GetTensorData<int8_t>();
  const T* a_scale = token_scales.GetTensorData<T>();
  std::vector<int16_t> a16(rows * row_length);
  std::vector<float> a_scale_f(rows);
  ParallelForRows(context, rows, kRowsPerTask, [&](size_t begin, size_t end) {
    for (size_t row = begin; row < end; ++row) {
      int16_t* target = a16.data() + row * row_length;
      std::copy(a + row * k, a + (row + 1) * k, target);
      SpreadRow(target, groups, group, stride, target);
      a_scale_f[row] = ToFloat(a_scale[row]);
    }
  });

  const uint8_t* packed = weight.GetTensorData<uint8_t>();
  const size_t row_bytes = PackedRowBytes(bits, k);
  const float* w_scale = weight_scales.GetTensorData<float>();
  const float* b = bias == nullptr ? nullptr : bias.GetTensorData<float>();
  const size_t panels = (static_cast<size_t>(n) + kPanelChannels - 1) / kPanelChannels;
  const size_t row_blocks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t weight_bits = bits;
  ParallelFor(context, panels * row_blocks, [&](size_t task) {
    const size_t col = task % panels * kPanelChannels, row = task / panels * kRowsPerTask;
    const size_t width = std::min(kPanelChannels, static_cast<size_t>(n) - col);
    const size_t height = std::min(kRowsPerTask, rows - row);
    std::vector<int16_t> w16(width * row_length);
    for (size_t c = 0; c < width; ++c) {
      int16_t* target = w16.data() + c * row_length;
      DecodeRow(packed + (col + c) * row_bytes, weight_bits, static_cast<size_t>(k), target);
      SpreadRow(target, groups, group, stride, target);
    }
    PanelArgs args{a16.data() + row * row_length, w16.data(), height, width, groups, stride,
                   a_scale_f.data() + row, w_scale + col * groups, b == nullptr ? nullptr : b + col,
                   nullptr, 0};
    if constexpr (std::is_same_v<T, float>) {
      args.y = y + row * n + col;
      args.ldy = static_cast<size_t>(n);
      isa.panel(args);
    } else {
      std::vector<float> out(height * width);
      args.y = out.data();
      args.ldy = width;
      isa.panel(args);
      for (size_t r = 0; r < height; ++r)
        for (size_t c = 0; c < width; ++c) y[(row + r) * n + col + c] = FromFloat<T>(out[r * width + c]);
    }
  });
  return nullptr;
}

template OrtStatusPtr ReadAttributes(const OrtKernelInfo*, QMatMulKernel<float>&);
template OrtStatusPtr ReadAttributes(const OrtKernelInfo*, QMatMulKernel<Half>&);
template struct QMatMulKernel<float>;
template struct QMatMulKernel<Half>;

}  // namespace oq
