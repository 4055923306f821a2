// The oq ops on ORT's CUDA execution provider: the shape checks every provider shares
// (op_inputs.cc), then the CUDA kernels (cuda/) on the session's compute stream. Inputs and
// outputs live in device memory; constant weights are read packed, as the kernels decode them.
#include "cuda/cuda_kernels.h"
#include "ops.h"

namespace oq {

namespace {

template <typename T>
constexpr int kIsHalf = std::is_same_v<T, Half>;

// The entry points' failure ("oq.<op> (CUDA): ...") as an ORT status.
OrtStatusPtr CudaStatus(const char* error) {
  return error == nullptr ? nullptr : Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, error);
}

const float* OptionalFloatInput(const Ort::KernelContext& context, size_t index) {
  if (context.GetInputCount() <= index) return nullptr;
  const Ort::ConstValue value = context.GetInput(index);
  return value == nullptr ? nullptr : value.GetTensorData<float>();
}

}  // namespace

template <typename T>
OrtStatusPtr CudaHadamardKernel<T>::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  HadamardShape shape;
  if (OrtStatusPtr status = ReadHadamardShape(context, shape)) return status;
  T* y = context.GetOutput(0, shape.shape).GetTensorMutableData<T>();
  return CudaStatus(OqCudaHadamard(context.GetInput(0).GetTensorData<T>(), y, shape.rows, shape.n, shape.factor,
                                   shape.k, kIsHalf<T>, context.GetGPUComputeStream()));
}

template <typename T>
OrtStatusPtr CudaQuantizePerTokenKernel<T>::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  QuantizeShape shape;
  if (OrtStatusPtr status = ReadQuantizeShape(context, *this, shape)) return status;
  if (shape.group != shape.channels) {
    return InvalidArgument("QuantizePerToken", "scales in groups of channels are CPU-only for now");
  }
  int8_t* codes = context.GetOutput(0, shape.codes_shape).GetTensorMutableData<int8_t>();
  T* scales = context.GetOutput(1, shape.scales_shape).GetTensorMutableData<T>();
  return CudaStatus(OqCudaQuantizePerToken(context.GetInput(0).GetTensorData<T>(), codes, scales, shape.rows,
                                           shape.channels, bits, clip, static_scale, kIsHalf<T>,
                                           context.GetGPUComputeStream()));
}

template <typename T>
OrtStatusPtr CudaQMatMulKernel<T>::ComputeV2(OrtKernelContext* raw_context) {
  Ort::KernelContext context(raw_context);
  QMatMulShape shape;
  if (OrtStatusPtr status = ReadQMatMulShape(context, *this, shape)) return status;
  if (shape.a_groups != 1) return InvalidArgument("QMatMul", "activation scales in groups are CPU-only for now");
  T* y = context.GetOutput(0, shape.y_shape).GetTensorMutableData<T>();
  return CudaStatus(
      OqCudaQMatMul(context.GetInput(0).GetTensorData<int8_t>(), context.GetInput(1).GetTensorData<T>(),
                    context.GetInput(2).GetTensorData<uint8_t>(), context.GetInput(3).GetTensorData<float>(),
                    OptionalFloatInput(context, 4), y, static_cast<int64_t>(shape.rows), static_cast<int64_t>(shape.k),
                    static_cast<int64_t>(shape.n), static_cast<int64_t>(shape.groups), bits, kIsHalf<T>,
                    context.GetGPUComputeStream()));
}

template struct CudaHadamardKernel<float>;
template struct CudaHadamardKernel<Half>;
template struct CudaQuantizePerTokenKernel<float>;
template struct CudaQuantizePerTokenKernel<Half>;
template struct CudaQMatMulKernel<float>;
template struct CudaQMatMulKernel<Half>;

}  // namespace oq
