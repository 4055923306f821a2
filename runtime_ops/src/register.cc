// Entry point of the oq custom-op library: ORT calls RegisterCustomOps when a session's
// options name this library (SessionOptions.register_custom_ops_library).
#include "onnxruntime_cxx_api.h"

#include <mutex>

#include "hadamard.h"

namespace {

constexpr const char* kDomain = "oq";

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // CreateStatus exists in every API version, so the oldest API can still say why.
    return api_base->GetApi(1)->CreateStatus(
        ORT_FAIL, "the oq op library needs ONNX Runtime API version 21 (onnxruntime >= 1.20)");
  }
  Ort::InitApi(api);
  static oq::HadamardOp hadamard;
  static Ort::CustomOpDomain* domain = nullptr;
  static std::once_flag once;
  try {
    std::call_once(once, [] {
      domain = new Ort::CustomOpDomain(kDomain);  // lives as long as the process: sessions keep pointers
      domain->Add(&hadamard);
    });
    Ort::UnownedSessionOptions(options).Add(*domain);
  } catch (const Ort::Exception& error) {
    return api->CreateStatus(error.GetOrtErrorCode(), error.what());
  }
  return nullptr;
}
