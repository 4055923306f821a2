// oq.QMatMul (CPU): integer matmul of activation codes with packed int8/int6/int4 weights.
//
// Y[t, n] = Σ_g s_t,a(g) · w_scale[n, g] · Σ_{k ∈ g} a[t, k] · w[n, k] + bias[n] (see ops.h), the
// group sums exact in int32 and each scaled by its token's and weight's scale, by one of two paths:
//  - rows (at most CpuIsa::row_path_tokens tokens, int8 and int4 weights): the ISA's row kernel reads the
//    packed weight rows where ORT holds them (row_kernels.h). Decode is bound by memory, and
//    this moves each weight byte once per call. Tasks are (64 rows, 64 channels) tiles.
//  - panels (otherwise): weights in int8 panels of 16 channels (weight_panels.h). Each task is
//    two panels: it unpacks them once (a vector transpose where the ISA has one) and runs them
//    over every block of kRowsPerTask rows.
//    Constant int6 weights are unpacked once when the session creates the kernel instead (their
//    codes straddle bytes, and no row kernel reads them). Each call finds the range [lo, hi] of
//    its activation codes and picks the panel form (qgemm_kernels.h): unsigned codes a - lo when
//    the ISA multiplies them exactly with weights up to 2^(bits-1) in magnitude, else int16
//    codes; the weight sums that form needs are computed once for constant weights.
// So int8 and int4 weights are never copied: what a W4 layer holds at run time is its packed
// initializer, half a byte per weight, its scales and its group sums.
#include <algorithm>
#include <memory>
#include <vector>

#include "ops.h"

namespace oq {

namespace {

constexpr size_t kRowsPerTask = 512;
// AVX2's u8 panel widens its int16 sums at least this often: with runs of over a hundred quads,
// a run of benchmarks/speed.py --part per-op timed AVX2 W4A4 at 43 ms where W4A8 (runs of 8)
// took 32 ms (1B up_proj, M = 512).
constexpr size_t kMaxInt16Steps = 8;
constexpr size_t kChannelsPerRowTask = 64;  // row-kernel tasks: kRowBlock tokens x 64 channels
constexpr size_t kRowBlock = 64;

// What one call multiplies, read from the kernel's inputs.
struct QMatMulCall {
  size_t rows, k, n, groups;
  int64_t bits;
  const int8_t* a;              // [rows, k] activation codes
  std::vector<float> a_scale;   // [rows, groups]: the token scale of each weight group
  bool scale_groups;            // the token scales differ between groups (else one per token)
  const uint8_t* w;             // [n, PackedRowBytes(bits, k)]
  const float* w_scales;        // [n, groups]
  const float* bias;            // [n] or null
};

template <typename T>
void Store(T* y, size_t index, float value) {
  y[index] = FromFloat<T>(value);
}

// Copies rows of k codes into a row kernel's activation layout (row_kernels.h): segments of
// `segment` codes (a group, or the whole row where blocks hold several groups), each in `blocks`
// blocks; and sums each group.
template <typename Element>
void LayOutRowActivations(const QMatMulCall& call, size_t block, size_t segment, size_t blocks, Element* out,
                          int32_t* sums) {
  const size_t group = call.k / call.groups, stride = call.k / segment * blocks * block;
  for (size_t row = 0; row < call.rows; ++row) {
    const int8_t* source = call.a + row * call.k;
    for (size_t s = 0; s < call.k / segment; ++s) {
      Element* target = out + row * stride + s * blocks * block;
      for (size_t i = 0; i < segment; ++i) {
        const size_t within = i % block;  // int4: codes meeting low nibbles, then those meeting high ones
        const size_t slot = call.bits == 4 ? i - within + within / 2 + (i % 2) * (block / 2) : i;
        target[slot] = source[s * segment + i];
      }
    }
    for (size_t g = 0; g < call.groups; ++g) {
      int32_t sum = 0;
      for (size_t i = 0; i < group; ++i) sum += source[g * group + i];
      sums[row * call.groups + g] = sum;
    }
  }
}

template <typename T>
void MultiplyByRows(const Ort::KernelContext& context, const QMatMulCall& call, const RowKernel& kernel, T* y) {
  const size_t group = call.k / call.groups, groups_per_block = GroupsPerBlock(kernel, group, call.bits);
  const size_t segment = groups_per_block > 1 ? call.k : group;
  const size_t blocks = (segment + kernel.block - 1) / kernel.block, stride = call.k / segment * blocks * kernel.block;
  std::vector<int8_t> a8(kernel.int16_activations ? 0 : call.rows * stride);
  std::vector<int16_t> a16(kernel.int16_activations ? call.rows * stride : 0);
  std::vector<int32_t> a_sums(call.rows * call.groups);
  if (kernel.int16_activations) {
    LayOutRowActivations(call, kernel.block, segment, blocks, a16.data(), a_sums.data());
  } else {
    LayOutRowActivations(call, kernel.block, segment, blocks, a8.data(), a_sums.data());
  }
  const size_t row_bytes = PackedRowBytes(call.bits, static_cast<int64_t>(call.k));
  const size_t chunks = (call.n + kChannelsPerRowTask - 1) / kChannelsPerRowTask;
  const size_t row_blocks = (call.rows + kRowBlock - 1) / kRowBlock;
  const size_t element_bytes = kernel.int16_activations ? 2 : 1;
  const char* a = kernel.int16_activations ? reinterpret_cast<const char*>(a16.data())
                                           : reinterpret_cast<const char*>(a8.data());
  ParallelFor(context, chunks * row_blocks, [&](size_t task) {
    const size_t first = task % chunks * kChannelsPerRowTask, width = std::min(kChannelsPerRowTask, call.n - first);
    const size_t first_row = task / chunks * kRowBlock, height = std::min(kRowBlock, call.rows - first_row);
    float sums[kRowBlock * kChannelsPerRowTask];
    kernel.sums(RowArgs{a + first_row * stride * element_bytes, stride, a_sums.data() + first_row * call.groups,
                        call.a_scale.data() + first_row * call.groups, height, call.w + first * row_bytes, row_bytes,
                        width, call.w_scales + first * call.groups, call.groups, group, groups_per_block, blocks,
                        sums});
    for (size_t r = 0; r < height; ++r) {
      for (size_t c = 0; c < width; ++c) {
        const float bias = call.bias == nullptr ? 0.0f : call.bias[first + c];
        Store(y, (first_row + r) * call.n + first + c, sums[r * width + c] + bias);
      }
    }
  });
}

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

template <typename T>
void MultiplyByPanels(const Ort::KernelContext& context, const QMatMulCall& call, const CpuIsa& isa,
                      const WeightPanels* unpacked, const int32_t* row_sums, T* y) {
  const size_t rows = call.rows, n = call.n, groups = call.groups;
  thread_local WeightPanels own;  // the panel a task unpacks (weight_panels.h)
  const WeightPanels shape(n, call.k, groups, isa.panel_quads, 0);
  const size_t quads = shape.quads;

  // The form of the activations: unsigned a - lo if the ISA's u8 panel is exact for them.
  const auto [lo, hi] = CodeRange(context, call.a, rows, call.k);
  const int32_t pair = 2 * (hi - lo) * (1 << (call.bits - 1));
  const bool unsigned8 = isa.u8_pair_limit == 0 || pair <= isa.u8_pair_limit;
  const int32_t a_offset = unsigned8 ? lo : 0;
  const size_t int16_steps =
      isa.u8_pair_limit == 0 || pair == 0 ? quads : std::clamp<size_t>(isa.u8_pair_limit / pair, 1, kMaxInt16Steps);
  const size_t a_stride = groups * quads * kQuad;
  std::vector<uint8_t> a8(unsigned8 ? rows * a_stride : 0);
  std::vector<int16_t> a16(unsigned8 ? 0 : rows * a_stride);
  ParallelForRows(context, rows, kRowsPerTask, [&](size_t begin, size_t end) {
    if (unsigned8) {
      LayOutActivations(call.a, begin, end, call.k, groups, quads, a8.data(),
                        [&](int8_t code) { return static_cast<uint8_t>(code - a_offset); });
    } else {
      LayOutActivations(call.a, begin, end, call.k, groups, quads, a16.data(),
                        [](int8_t code) { return int16_t{code}; });
    }
  });

  const PanelFunction panel = unsigned8 ? isa.panel_u8 : isa.panel_s16;
  const size_t tasks = (shape.panels + kMaxPanels - 1) / kMaxPanels;
  ParallelFor(context, tasks, [&](size_t task) {  // each task unpacks its panels once, for every row
    const size_t first = task * kMaxPanels, count = std::min(kMaxPanels, shape.panels - first);
    const size_t col = first * kPanelChannels, width = std::min(count * kPanelChannels, n - col);
    if (unpacked == nullptr) {
      own.Reset(n, call.k, groups, isa.panel_quads, kMaxPanels);
      for (size_t j = 0; j < count; ++j) {
        own.Pack(first + j, call.w, call.bits, call.w_scales, row_sums, j, isa.transpose_quads);
      }
    }
    const WeightPanels& weights = unpacked == nullptr ? own : *unpacked;
    const size_t slot = unpacked == nullptr ? 0 : first;
    float panel_bias[kMaxPanels * kPanelChannels] = {};
    if (call.bias != nullptr) std::copy(call.bias + col, call.bias + col + width, panel_bias);
    std::vector<float> out(std::is_same_v<T, float> ? 0 : kRowsPerTask * width);
    for (size_t row = 0; row < rows; row += kRowsPerTask) {
      const size_t height = std::min(kRowsPerTask, rows - row);
      PanelArgs args{unsigned8 ? static_cast<const void*>(a8.data() + row * a_stride)
                               : static_cast<const void*>(a16.data() + row * a_stride),
                     a_stride, a_offset, int16_steps, height, groups, quads, call.a_scale.data() + row * groups,
                     call.scale_groups, count,
                     weights.Codes(slot), weights.Sums(slot), weights.Scales(slot), panel_bias, nullptr, 0, width};
      if constexpr (std::is_same_v<T, float>) {
        args.y = y + row * n + col;
        args.ldy = n;
        panel(args);
      } else {
        args.y = out.data();
        args.ldy = width;
        panel(args);
        for (size_t r = 0; r < height; ++r)
          for (size_t c = 0; c < width; ++c) Store(y, (row + r) * n + col + c, out[r * width + c]);
      }
    }
  });
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
    const size_t n = static_cast<size_t>(w_shape[0]), k = static_cast<size_t>(kernel.in_features);
    const size_t groups = static_cast<size_t>(s_shape[1]), panel_count = (n + kPanelChannels - 1) / kPanelChannels;
    kernel.constant_sums = std::make_shared<const std::vector<int32_t>>(
        GroupSums(weight.GetTensorData<uint8_t>(), kernel.bits, n, k, groups));
    if (kernel.bits == 6) {  // the only width no row kernel reads where it lies
      auto panels = std::make_shared<WeightPanels>(n, k, groups, kernel.isa.panel_quads, panel_count);
      for (size_t p = 0; p < panel_count; ++p) {
        panels->Pack(p, weight.GetTensorData<uint8_t>(), kernel.bits, scales.GetTensorData<float>(),
                     kernel.constant_sums->data(), p);
      }
      kernel.constant_panels = std::move(panels);
    }
  }
  return nullptr;
}

template <typename T>
OrtStatusPtr QMatMulKernel<T>::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  QMatMulShape shape;
  if (OrtStatusPtr status = ReadQMatMulShape(context, *this, shape)) return status;
  const Ort::ConstValue codes = context.GetInput(0), token_scales = context.GetInput(1);
  const Ort::ConstValue weight = context.GetInput(2), weight_scales = context.GetInput(3);
  const Ort::ConstValue bias = context.GetInputCount() > 4 ? context.GetInput(4) : Ort::ConstValue{nullptr};
  T* y = context.GetOutput(0, shape.y_shape).GetTensorMutableData<T>();
  if (shape.rows == 0) return nullptr;

  QMatMulCall call{shape.rows, shape.k, shape.n, shape.groups, bits, codes.GetTensorData<int8_t>(),
                   std::vector<float>(shape.rows * shape.groups), shape.a_groups > 1, weight.GetTensorData<uint8_t>(),
                   weight_scales.GetTensorData<float>(),
                   bias == nullptr ? nullptr : bias.GetTensorData<float>()};
  const T* token_scale = token_scales.GetTensorData<T>();  // [rows, a_groups], each spanning whole weight groups
  const size_t spanned = shape.groups / shape.a_groups;
  for (size_t i = 0; i < call.a_scale.size(); ++i) call.a_scale[i] = ToFloat(token_scale[i / spanned]);

  const RowKernel& rows = bits == 4 ? isa.rows4 : isa.rows8;
  const bool groups_start_at_bytes = shape.groups == 1 || shape.k / shape.groups * bits % 8 == 0;
  if (bits != 6 && shape.rows <= isa.row_path_tokens && groups_start_at_bytes) {
    MultiplyByRows(context, call, rows, y);
  } else {
    std::shared_ptr<const std::vector<int32_t>> sums = constant_sums;
    if (sums == nullptr) {
      sums = std::make_shared<std::vector<int32_t>>(GroupSums(call.w, bits, call.n, call.k, call.groups));
    }
    MultiplyByPanels(context, call, isa, constant_panels.get(), sums->data(), y);
  }
  return nullptr;
}

template OrtStatusPtr InitializeKernel(const OrtKernelInfo*, QMatMulKernel<float>&);
template OrtStatusPtr InitializeKernel(const OrtKernelInfo*, QMatMulKernel<Half>&);
template struct QMatMulKernel<float>;
template struct QMatMulKernel<Half>;

}  // namespace oq
