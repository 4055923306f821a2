// Entry point of the oq custom-op library: ORT calls RegisterCustomOps when a session's
// options name this library (SessionOptions.register_custom_ops_library). A library built
// with nvcc (OQ_WITH_CUDA) also registers the ops for the CUDA execution provider; ORT picks
// the kernel of the provider a node is assigned to.
#include <mutex>

#include "ops.h"

namespace {

constexpr const char* kDomain = "oq";

}  // namespace

// Plain C entry point (no ORT needed, e.g. through ctypes): the CPU instruction sets the
// QMatMul kernels can use here, comma-separated.
extern "C" __attribute__((visibility("default"))) const char* OqSupportedCpuIsas() {
  return oq::SupportedCpuIsas();
}

// Plain C entry point: 1 if this library was built with its CUDA kernels (OqCuda*), else 0.
extern "C" __attribute__((visibility("default"))) int OqHasCudaKernels() {
#ifdef OQ_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // CreateStatus exists in every API version, so the oldest API can still say why.
    return api_base->GetApi(1)->CreateStatus(
        ORT_FAIL, "the oq op library needs ONNX Runtime API version 21 (onnxruntime >= 1.20)");
  }
  Ort::InitApi(api);
  static oq::HadamardOp<float> hadamard;
  static oq::HadamardOp<oq::Half> hadamard_half;
  static oq::QuantizePerTokenOp<float> quantize;
  static oq::QuantizePerTokenOp<oq::Half> quantize_half;
  static oq::QMatMulOp<float> qmatmul;
  static oq::QMatMulOp<oq::Half> qmatmul_half;
#ifdef OQ_WITH_CUDA
  static oq::CudaHadamardOp<float> cuda_hadamard;
  static oq::CudaHadamardOp<oq::Half> cuda_hadamard_half;
  static oq::CudaQuantizePerTokenOp<float> cuda_quantize;
  static oq::CudaQuantizePerTokenOp<oq::Half> cuda_quantize_half;
  static oq::CudaQMatMulOp<float> cuda_qmatmul;
  static oq::CudaQMatMulOp<oq::Half> cuda_qmatmul_half;
#endif
  static Ort::CustomOpDomain* domain = nullptr;
  static std::once_flag once;
  try {
    std::call_once(once, [] {
      domain = new Ort::CustomOpDomain(kDomain);  // lives as long as the process: sessions keep pointers
      domain->Add(&hadamard);
      domain->Add(&hadamard_half);
      domain->Add(&quantize);
      domain->Add(&quantize_half);
      domain->Add(&qmatmul);
      domain->Add(&qmatmul_half);
#ifdef OQ_WITH_CUDA
      domain->Add(&cuda_hadamard);
      domain->Add(&cuda_hadamard_half);
      domain->Add(&cuda_quantize);
      domain->Add(&cuda_quantize_half);
      domain->Add(&cuda_qmatmul);
      domain->Add(&cuda_qmatmul_half);
#endif
    });
    Ort::UnownedSessionOptions(options).Add(*domain);
  } catch (const Ort::Exception& error) {
    return api->CreateStatus(error.GetOrtErrorCode(), error.what());
  }
  return nullptr;
}
