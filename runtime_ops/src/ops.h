// The oq operators, each for float and float16 tensors, on the CPU and (when the library is
// built with nvcc) CUDA execution providers. One op class per operator, element type and
// provider; ORT merges kernels that share a name into one schema with type constraints.
//
//   Hadamard(X [..., n] T, H_K [K, K] float?) -> Y [..., n] T
//       Y = X · (H_K ⊗ H_m), H_m the orthonormal Sylvester matrix of m = n / K = 2^j.
//   QuantizePerToken(X [..., K] T; bits, clip, static_scale, group) -> (codes [..., K] int8, scales [..., A] T)
//       s_ta = max(clip · max_{j ∈ a} |x_tj| / (2^(bits-1) - 1), tiny) per token and group a of
//       `group` channels (group 0: the whole token, A = 1), or static_scale if it is > 0;
//       codes = clip(round_half_even(x / s), -2^(bits-1), 2^(bits-1) - 1).
//   QMatMul(codes [..., K] int8, scales [..., A] T, W packed [N, B] uint8, W scales [N, G] float,
//           bias [N] float?; bits, in_features = K) -> Y [..., N] T
//       Y[t, n] = Σ_g s_t,a(g) · w_scale[n, g] Σ_{k ∈ g} codes[t, k] · w[n, k] + bias[n], with
//       groups of K / G input channels, A dividing G (a(g) = g · A / G: each activation group
//       spans whole weight groups), and w packed row by row: int8 one per byte, int4 two per
//       byte (low nibble first), int6 four per three bytes (little-endian 24-bit words).
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "cpu_isa.h"
#include "weight_panels.h"

namespace oq {

// --- node attributes and input shapes, the same for every provider -------------------------

struct QuantizeAttributes {
  int64_t bits = 8, group = 0;  // group 0: one scale per token
  float clip = 1.0f, static_scale = 0.0f;
};
OrtStatusPtr ReadAttributes(const OrtKernelInfo* info, QuantizeAttributes& attributes);

struct QMatMulAttributes {
  int64_t bits = 8, in_features = 0;
};
OrtStatusPtr ReadAttributes(const OrtKernelInfo* info, QMatMulAttributes& attributes);

// Creation of a kernel that needs only its node's attributes (read and checked).
template <typename Kernel>
auto InitializeKernel(const OrtKernelInfo* info, Kernel& kernel) -> decltype(ReadAttributes(info, kernel)) {
  return ReadAttributes(info, kernel);
}

// Hadamard's input: X [..., n] and the optional factor H_K (null for K = 1), checked.
struct HadamardShape {
  std::vector<int64_t> shape;
  int64_t rows = 0, n = 0, k = 1, m = 0;  // m = n / K, a power of two
  const float* factor = nullptr;
};
OrtStatusPtr ReadHadamardShape(const Ort::KernelContext& context, HadamardShape& out);

// QuantizePerToken's input X [..., C] (C > 0, a multiple of a nonzero group) and its outputs' shapes.
struct QuantizeShape {
  std::vector<int64_t> codes_shape, scales_shape;  // [..., C] and [..., C / group]
  int64_t rows = 0, channels = 0, group = 0;         // group: channels per scale
};
OrtStatusPtr ReadQuantizeShape(const Ort::KernelContext& context, const QuantizeAttributes& attributes,
                               QuantizeShape& out);

// QMatMul's inputs, checked against each other and the attributes.
struct QMatMulShape {
  std::vector<int64_t> y_shape;
  size_t rows = 0, k = 0, n = 0, groups = 0, a_groups = 1;  // groups: the weight scales'; a_groups: the tokens'
};
OrtStatusPtr ReadQMatMulShape(const Ort::KernelContext& context, const QMatMulAttributes& attributes,
                              QMatMulShape& out);
// The packed weight [N, B] and its scales [N, G] against bits and in_features.
OrtStatusPtr CheckWeights(int64_t bits, int64_t k, const std::vector<int64_t>& w_shape,
                          const std::vector<int64_t>& s_shape);

// --- CPU kernels -------------------------------------------------------------------------

template <typename T>
struct HadamardKernel {
  CpuIsa isa{};
  std::string isa_error;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

template <typename T>
struct QuantizePerTokenKernel : QuantizeAttributes {
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

template <typename T>
struct QMatMulKernel : QMatMulAttributes {
  CpuIsa isa{};
  std::string isa_error;
  // At creation, when W and its scales are constant: their group sums and (int6 only) their panels.
  std::shared_ptr<const std::vector<int32_t>> constant_sums;
  std::shared_ptr<const WeightPanels> constant_panels;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

// Kernel creation beyond the attributes: the CPU kernels pick their instruction set, and
// QMatMul also sums constant weights and unpacks constant int6 ones.
template <typename T>
OrtStatusPtr InitializeKernel(const OrtKernelInfo* info, QMatMulKernel<T>& kernel);
template <typename T>
OrtStatusPtr InitializeKernel(const OrtKernelInfo*, HadamardKernel<T>& kernel) {
  kernel.isa = SelectCpuIsa(&kernel.isa_error);
  return kernel.isa_error.empty() ? nullptr : InvalidArgument("Hadamard", kernel.isa_error);
}

// --- CUDA kernels (cuda_ops.cc; inputs and outputs in device memory, ORT's compute stream) --

template <typename T>
struct CudaHadamardKernel {
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

template <typename T>
struct CudaQuantizePerTokenKernel : QuantizeAttributes {
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

template <typename T>
struct CudaQMatMulKernel : QMatMulAttributes {
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

template <typename T>
OrtStatusPtr InitializeKernel(const OrtKernelInfo*, CudaHadamardKernel<T>&) {
  return nullptr;
}

// --- op declarations -----------------------------------------------------------------------

enum class Provider { kCpu, kCuda };

// Declares one custom op: name, kernel, provider, input and output element types, optional inputs.
template <typename Kernel, typename Traits, Provider kProvider>
struct CustomOp : Ort::CustomOpBase<CustomOp<Kernel, Traits, kProvider>, Kernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    auto* created = new Kernel();
    if (OrtStatusPtr status = InitializeKernel(info, *created)) {
      delete created;
      return status;
    }
    *kernel = created;
    return nullptr;
  }
  const char* GetName() const { return Traits::kName; }
  const char* GetExecutionProviderType() const {
    return kProvider == Provider::kCpu ? "CPUExecutionProvider" : "CUDAExecutionProvider";
  }
  size_t GetInputTypeCount() const { return Traits::kInputs.size(); }
  ONNXTensorElementDataType GetInputType(size_t index) const { return Traits::kInputs[index]; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index < Traits::kRequiredInputs ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return Traits::kOutputs.size(); }
  ONNXTensorElementDataType GetOutputType(size_t index) const { return Traits::kOutputs[index]; }
};

template <typename T>
struct HadamardTraits {
  static constexpr const char* kName = "Hadamard";
  static constexpr std::array kInputs{kElementType<T>, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  static constexpr size_t kRequiredInputs = 1;
  static constexpr std::array kOutputs{kElementType<T>};
};

template <typename T>
struct QuantizePerTokenTraits {
  static constexpr const char* kName = "QuantizePerToken";
  static constexpr std::array kInputs{kElementType<T>};
  static constexpr size_t kRequiredInputs = 1;
  static constexpr std::array kOutputs{ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, kElementType<T>};
};

template <typename T>
struct QMatMulTraits {
  static constexpr const char* kName = "QMatMul";
  static constexpr std::array kInputs{ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, kElementType<T>,
                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  static constexpr size_t kRequiredInputs = 4;
  static constexpr std::array kOutputs{kElementType<T>};
};

template <typename T>
using HadamardOp = CustomOp<HadamardKernel<T>, HadamardTraits<T>, Provider::kCpu>;
template <typename T>
using QuantizePerTokenOp = CustomOp<QuantizePerTokenKernel<T>, QuantizePerTokenTraits<T>, Provider::kCpu>;
template <typename T>
using QMatMulOp = CustomOp<QMatMulKernel<T>, QMatMulTraits<T>, Provider::kCpu>;
template <typename T>
using CudaHadamardOp = CustomOp<CudaHadamardKernel<T>, HadamardTraits<T>, Provider::kCuda>;
template <typename T>
using CudaQuantizePerTokenOp = CustomOp<CudaQuantizePerTokenKernel<T>, QuantizePerTokenTraits<T>, Provider::kCuda>;
template <typename T>
using CudaQMatMulOp = CustomOp<CudaQMatMulKernel<T>, QMatMulTraits<T>, Provider::kCuda>;

}  // namespace oq
