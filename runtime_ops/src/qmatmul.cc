// oq.QMatMul (CPU): integer matmul of activation codes with packed int8/int6/int4 weights.
//
// Y[t, n] = s_t · Σ_g w_scale[n, g] · Σ_{k ∈ g} a[t, k] · w[n, k] + bias[n] (see ops.h).
// Weights are unpacked into int8 panels of 16 channels (weight_panels.h): once at session
// creation when they are constant initializers, else on every call. Each call finds the range
// [lo, hi] of its activation codes and picks the panel form (qgemm_kernels.h): unsigned
// codes a - lo when the ISA multiplies them exactly with weights up to max|w|, else int16
// codes. Tasks are (row block, channel panel) pairs on the session's thread pool; the group
// sums are exact int32.
#include <algorithm>
#include <memory>
#include <vector>

#include "ops.h"

namespace oq {

namespace {

constexpr size_t kRowsPerTask = 512;

// Copies rows of k codes into the panels' activation layout: per group, `group` values
// (converted by `convert`) and zeros up to whole quads.
template <typename Element, typename Convert>
void LayOutActivations(const int8_t* codes, size_t begin, size_t end, size_t k, size_t groups, size_t quads,
                       Element* out, Convert convert) {
  const size_t group = k / groups, stride = groups * quads * kQuad;
  for (size_t row = begin; row < end; ++row) {
    for (size_t g = 0; g < groups; ++g) {
      const int8_t* source = codes + row * k + g * group;
      Element* target = out + row * stride + g * quads * kQuad;
      for (size_t i = 0; i < group; ++i) target[i] = convert(source[i]);
    }
  }
}

// The smallest and largest of rows x k codes (row blocks on the session's threads).
std::pair<int32_t, int32_t> CodeRange(const Ort::KernelContext& context, const int8_t* codes, size_t rows, size_t k) {
  const size_t blocks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  std::vector<std::pair<int8_t, int8_t>> ranges(blocks);
  ParallelForRows(context, rows, kRowsPerTask, [&](size_t begin, size_t end) {
    int8_t lo = 127, hi = -128;
    for (const int8_t* code = codes + begin * k; code != codes + end * k; ++code) {
      lo = std::min(lo, *code);
      hi = std::max(hi, *code);
    }
    ranges[begin / kRowsPerTask] = {lo, hi};
  });
  std::pair<int32_t, int32_t> range{127, -128};
  for (const auto& [lo, hi] : ranges) range = {std::min<int32_t>(range.first, lo), std::max<int32_t>(range.second, hi)};
  return range;
}

}  // namespace

template <typename T>
OrtStatusPtr InitializeKernel(const OrtKernelInfo* info, QMatMulKernel<T>& kernel) {
  if (OrtStatusPtr status = ReadAttributes(info, kernel)) return status;
  Ort::ConstKernelInfo node(info);
  kernel.isa = SelectCpuIsa(&kernel.isa_error);
  if (!kernel.isa_error.empty()) return InvalidArgument("QMatMul", kernel.isa_error);

  int weight_is_constant = 0, scales_are_constant = 0;
  const Ort::ConstValue weight = node.GetTensorConstantInput(2, &weight_is_constant);
  const Ort::ConstValue scales = node.GetTensorConstantInput(3, &scales_are_constant);
  if (weight_is_constant && scales_are_constant) {
    const std::vector<int64_t> w_shape = weight.GetTensorTypeAndShapeInfo().GetShape();
    const std::vector<int64_t> s_shape = scales.GetTensorTypeAndShapeInfo().GetShape();
    if (OrtStatusPtr status = CheckWeights(kernel.bits, kernel.in_features, w_shape, s_shape)) return status;
    auto panels = std::make_shared<WeightPanels>(static_cast<size_t>(w_shape[0]),
                                                 static_cast<size_t>(kernel.in_features),
                                                 static_cast<size_t>(s_shape[1]));
    for (size_t p = 0; p < panels->panels; ++p) {
      panels->Pack(p, weight.GetTensorData<uint8_t>(), kernel.bits, scales.GetTensorData<float>());
    }
    kernel.constant_weights = std::move(panels);
  }
  return nullptr;
}

template <typename T>
OrtStatusPtr QMatMulKernel<T>::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  QMatMulShape shape;
  if (OrtStatusPtr status = ReadQMatMulShape(context, *this, shape)) return status;
  const size_t rows = shape.rows, k = shape.k;
  const Ort::ConstValue codes = context.GetInput(0), token_scales = context.GetInput(1);
  const Ort::ConstValue bias = context.GetInputCount() > 4 ? context.GetInput(4) : Ort::ConstValue{nullptr};
  std::shared_ptr<const WeightPanels> weights = constant_weights;
  if (weights == nullptr) {
    const Ort::ConstValue weight = context.GetInput(2), scales = context.GetInput(3);
    auto packed = std::make_shared<WeightPanels>(shape.n, k, shape.groups);
    ParallelFor(context, packed->panels, [&](size_t p) {
      packed->Pack(p, weight.GetTensorData<uint8_t>(), bits, scales.GetTensorData<float>());
    });
    weights = std::move(packed);
  }
  const size_t n = weights->n, groups = weights->groups, quads = weights->quads;
  T* y = context.GetOutput(0, shape.y_shape).GetTensorMutableData<T>();
  if (rows == 0) return nullptr;

  // The form of the activations: unsigned a - lo if the ISA's u8 panel is exact for them.
  const int8_t* a = codes.GetTensorData<int8_t>();
  const auto [lo, hi] = CodeRange(context, a, rows, k);
  const int32_t pair = 2 * (hi - lo) * weights->MaxAbs();
  const bool unsigned8 = isa.u8_pair_limit == 0 || pair <= isa.u8_pair_limit;
  const int32_t a_offset = unsigned8 ? lo : 0;
  const size_t int16_steps =
      isa.u8_pair_limit == 0 || pair == 0 ? quads : std::clamp<size_t>(isa.u8_pair_limit / pair, 1, quads);
  const size_t a_stride = groups * quads * kQuad;
  std::vector<uint8_t> a8(unsigned8 ? rows * a_stride : 0);
  std::vector<int16_t> a16(unsigned8 ? 0 : rows * a_stride);
  ParallelForRows(context, rows, kRowsPerTask, [&](size_t begin, size_t end) {
    if (unsigned8) {
      LayOutActivations(a, begin, end, k, groups, quads, a8.data(),
                        [&](int8_t code) { return static_cast<uint8_t>(code - a_offset); });
    } else {
      LayOutActivations(a, begin, end, k, groups, quads, a16.data(), [](int8_t code) { return int16_t{code}; });
    }
  });
  std::vector<float> a_scale(rows);
  const T* token_scale = token_scales.GetTensorData<T>();
  std::transform(token_scale, token_scale + rows, a_scale.begin(), [](T s) { return ToFloat(s); });

  const float* b = bias == nullptr ? nullptr : bias.GetTensorData<float>();
  const size_t row_blocks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  const PanelFunction panel = unsigned8 ? isa.panel_u8 : isa.panel_s16;
  ParallelFor(context, weights->panels * row_blocks, [&](size_t task) {
    const size_t p = task % weights->panels, row = task / weights->panels * kRowsPerTask;
    const size_t col = p * kPanelChannels, width = std::min(kPanelChannels, n - col);
    const size_t height = std::min(kRowsPerTask, rows - row);
    float panel_bias[kPanelChannels] = {};
    if (b != nullptr) std::copy(b + col, b + col + width, panel_bias);
    PanelArgs args{unsigned8 ? static_cast<const void*>(a8.data() + row * a_stride)
                             : static_cast<const void*>(a16.data() + row * a_stride),
                   a_stride, a_offset, int16_steps, height, groups, quads, a_scale.data() + row,
                   weights->codes.data() + p * weights->PanelBytes(),
                   weights->sums.data() + p * groups * kPanelChannels,
                   weights->scales.data() + p * groups * kPanelChannels, panel_bias, nullptr, 0, width};
    if constexpr (std::is_same_v<T, float>) {
      args.y = y + row * n + col;
      args.ldy = n;
      panel(args);
    } else {
      std::vector<float> out(height * width);
      args.y = out.data();
      args.ldy = width;
      panel(args);
      for (size_t r = 0; r < height; ++r)
        for (size_t c = 0; c < width; ++c) y[(row + r) * n + col + c] = FromFloat<T>(out[r * width + c]);
    }
  });
  return nullptr;
}

template OrtStatusPtr InitializeKernel(const OrtKernelInfo*, QMatMulKernel<float>&);
template OrtStatusPtr InitializeKernel(const OrtKernelInfo*, QMatMulKernel<Half>&);
template struct QMatMulKernel<float>;
template struct QMatMulKernel<Half>;

}  // namespace oq
