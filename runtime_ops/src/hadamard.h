// oq.Hadamard: y = x · H_n on the last axis, H_n orthonormal (see hadamard.cc).
#pragma once

#include "onnxruntime_cxx_api.h"

namespace oq {

struct HadamardKernel {
  HadamardKernel(const OrtApi&, const OrtKernelInfo*) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

struct HadamardOp : Ort::CustomOpBase<HadamardOp, HadamardKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "Hadamard"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 0 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace oq
