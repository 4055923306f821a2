// Helpers shared by the oq kernels: element types, error statuses, the session's thread pool.
#pragma once

#include <algorithm>
#include <string>
#include <type_traits>

#include "onnxruntime_cxx_api.h"

namespace oq {

using Half = Ort::Float16_t;

template <typename T>
constexpr ONNXTensorElementDataType kElementType =
    std::is_same_v<T, float> ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;

inline float ToFloat(float value) { return value; }
inline float ToFloat(Half value) { return value.ToFloat(); }

template <typename T>
inline T FromFloat(float value) {
  if constexpr (std::is_same_v<T, float>) {
    return value;
  } else {
    return Half(value);
  }
}

// An ORT status carrying "oq.<op>: <message>" (ORT turns it into an exception for the caller).
inline OrtStatusPtr InvalidArgument(const char* op, const std::string& message) {
  return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, ("oq." + std::string(op) + ": " + message).c_str());
}

// The node's attribute `name`, or `fallback` when the node does not set it.
template <typename T>
T AttributeOr(const Ort::ConstKernelInfo& node, const char* name, T fallback) {
  try {
    return node.GetAttribute<T>(name);
  } catch (const Ort::Exception&) {
    return fallback;
  }
}

// An error status unless a code width attribute is 8, 6 or 4.
inline OrtStatusPtr CheckCodeBits(const char* op, int64_t bits) {
  if (bits == 8 || bits == 6 || bits == 4) return nullptr;
  return InvalidArgument(op, "bits must be 8, 6 or 4, not " + std::to_string(bits));
}

// Runs body(i) for i in [0, total) on the session's intra-op thread pool.
template <typename Body>
void ParallelFor(const Ort::KernelContext& context, size_t total, Body&& body) {
  if (total == 0) return;
  auto thunk = [](void* data, size_t index) { (*static_cast<std::remove_reference_t<Body>*>(data))(index); };
  context.ParallelFor(thunk, total, 0, &body);
}

// Runs body(begin, end) over [0, rows) in blocks of rows_per_task rows on the session's threads.
template <typename Body>
void ParallelForRows(const Ort::KernelContext& context, size_t rows, size_t rows_per_task, Body&& body) {
  ParallelFor(context, (rows + rows_per_task - 1) / rows_per_task, [&](size_t task) {
    const size_t begin = task * rows_per_task;
    body(begin, std::min(rows, begin + rows_per_task));
  });
}

// Shape [d0, d1, ...] as text, for error messages.
inline std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

}  // namespace oq
