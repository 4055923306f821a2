// The oq operators (CPU), each for float and float16 tensors. One op class per operator and
// element type; ORT merges kernels that share a name into one schema with type constraints.
//
//   Hadamard(X [..., n] T, H_K [K, K] float?) -> Y [..., n] T
//       Y = X · (H_K ⊗ H_m), H_m the orthonormal Sylvester matrix of m = n / K = 2^j.
//   QuantizePerToken(X [..., K] T; bits, clip, static_scale) -> (codes [..., K] int8, scales [..., 1] T)
//       s_t = max(clip · max_j |x_tj| / (2^(bits-1) - 1), tiny) per token, or static_scale
//       if it is > 0; codes = clip(round_half_even(x / s), -2^(bits-1), 2^(bits-1) - 1).
//   QMatMul(codes [..., K] int8, scales [..., 1] T, W packed [N, B] uint8, W scales [N, G] float,
//           bias [N] float?; bits, in_features = K) -> Y [..., N] T
//       Y[t, n] = s_t · Σ_g w_scale[n, g] Σ_{k ∈ g} codes[t, k] · w[n, k] + bias[n], with
//       groups of K / G input channels and w packed row by row: int8 one per byte, int4 two per
//       byte (low nibble first), int6 four per three bytes (little-endian 24-bit words).
#pragma once

#include <array>
#include <memory>
#include <string>

#include "common.h"
#include "cpu_isa.h"
#include "weight_panels.h"

namespace oq {

template <typename T>
struct HadamardKernel {
  CpuIsa isa{};
  std::string isa_error;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

template <typename T>
struct QuantizePerTokenKernel {
  int64_t bits = 8;
  float clip = 1.0f, static_scale = 0.0f;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

template <typename T>
struct QMatMulKernel {
  int64_t bits = 8, in_features = 0;
  CpuIsa isa{};
  std::string isa_error;
  std::shared_ptr<const WeightPanels> constant_weights;  // packed at creation if W and its scales are constant
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

// Kernel creation: reads and checks the node's attributes (QMatMul also packs constant weights).
template <typename T>
OrtStatusPtr InitializeKernel(const OrtKernelInfo* info, QuantizePerTokenKernel<T>& kernel);
template <typename T>
OrtStatusPtr InitializeKernel(const OrtKernelInfo* info, QMatMulKernel<T>& kernel);
template <typename T>
OrtStatusPtr InitializeKernel(const OrtKernelInfo*, HadamardKernel<T>& kernel) {
  kernel.isa = SelectCpuIsa(&kernel.isa_error);
  return kernel.isa_error.empty() ? nullptr : InvalidArgument("Hadamard", kernel.isa_error);
}

// Declares one CPU custom op: name, kernel, input and output element types, optional inputs.
template <typename Kernel, typename Traits>
struct CpuOp : Ort::CustomOpBase<CpuOp<Kernel, Traits>, Kernel, /*WithStatus=*/true> {
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
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
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
using HadamardOp = CpuOp<HadamardKernel<T>, HadamardTraits<T>>;
template <typename T>
using QuantizePerTokenOp = CpuOp<QuantizePerTokenKernel<T>, QuantizePerTokenTraits<T>>;
template <typename T>
using QMatMulOp = CpuOp<QMatMulKernel<T>, QMatMulTraits<T>>;

}  // namespace oq
