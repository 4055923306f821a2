// What every provider's kernels check before they compute: the node's attributes at kernel
// creation, and the input shapes on each call. The messages are the ops' user-facing errors.
#include "ops.h"

namespace oq {

namespace {

std::vector<int64_t> Shape(const Ort::ConstValue& value) { return value.GetTensorTypeAndShapeInfo().GetShape(); }

size_t ElementCount(const Ort::ConstValue& value) { return value.GetTensorTypeAndShapeInfo().GetElementCount(); }

}  // namespace

OrtStatusPtr ReadAttributes(const OrtKernelInfo* info, QuantizeAttributes& attributes) {
  Ort::ConstKernelInfo node(info);
  try {
    attributes.bits = node.GetAttribute<int64_t>("bits");
  } catch (const Ort::Exception&) {
    return InvalidArgument("QuantizePerToken", "the attribute bits (8, 6 or 4) is required");
  }
  attributes.clip = AttributeOr(node, "clip", attributes.clip);
  attributes.static_scale = AttributeOr(node, "static_scale", attributes.static_scale);
  attributes.group = AttributeOr(node, "group", attributes.group);
  if (OrtStatusPtr status = CheckCodeBits("QuantizePerToken", attributes.bits)) return status;
  if (!(attributes.clip > 0.0f) || attributes.static_scale < 0.0f || attributes.group < 0) {
    return InvalidArgument("QuantizePerToken", "clip must be positive, static_scale and group not negative");
  }
  if (attributes.group > 0 && attributes.static_scale > 0.0f) {
    return InvalidArgument("QuantizePerToken", "a static scale has no groups");
  }
  return nullptr;
}

OrtStatusPtr ReadAttributes(const OrtKernelInfo* info, QMatMulAttributes& attributes) {
  Ort::ConstKernelInfo node(info);
  try {
    attributes.bits = node.GetAttribute<int64_t>("bits");
    attributes.in_features = node.GetAttribute<int64_t>("in_features");
  } catch (const Ort::Exception&) {
    return InvalidArgument("QMatMul", "the attributes bits and in_features are required");
  }
  if (OrtStatusPtr status = CheckCodeBits("QMatMul", attributes.bits)) return status;
  if (attributes.in_features <= 0) return InvalidArgument("QMatMul", "in_features must be positive");
  return nullptr;
}

OrtStatusPtr ReadHadamardShape(const Ort::KernelContext& context, HadamardShape& out) {
  const Ort::ConstValue input = context.GetInput(0);
  out.shape = Shape(input);
  if (out.shape.empty()) return InvalidArgument("Hadamard", "X must have at least one axis");
  out.n = out.shape.back();
  out.k = 1;
  out.factor = nullptr;
  if (context.GetInputCount() > 1) {
    const Ort::ConstValue h = context.GetInput(1);
    if (h != nullptr) {
      const std::vector<int64_t> h_shape = Shape(h);
      if (h_shape.size() != 2 || h_shape[0] != h_shape[1]) {
        return InvalidArgument("Hadamard", "H_K must be a square matrix, got " + ShapeText(h_shape));
      }
      out.k = h_shape[0];
      out.factor = h.GetTensorData<float>();
    }
  }
  if (out.k <= 0 || out.n % out.k != 0) {
    return InvalidArgument("Hadamard", "the last axis (" + std::to_string(out.n) + ") is not a multiple of K = " +
                                           std::to_string(out.k));
  }
  out.m = out.n / out.k;
  if (out.m <= 0 || (out.m & (out.m - 1)) != 0) {
    return InvalidArgument("Hadamard", "n / K = " + std::to_string(out.m) + " is not a power of two");
  }
  out.rows = static_cast<int64_t>(ElementCount(input)) / out.n;
  return nullptr;
}

OrtStatusPtr ReadQuantizeShape(const Ort::KernelContext& context, const QuantizeAttributes& attributes,
                               QuantizeShape& out) {
  const Ort::ConstValue input = context.GetInput(0);
  out.codes_shape = Shape(input);
  if (out.codes_shape.empty() || out.codes_shape.back() == 0) {
    return InvalidArgument("QuantizePerToken", "X needs a non-empty last axis, got " + ShapeText(out.codes_shape));
  }
  out.channels = out.codes_shape.back();
  out.group = attributes.group == 0 ? out.channels : attributes.group;
  if (out.channels % out.group != 0) {
    return InvalidArgument("QuantizePerToken", "groups of " + std::to_string(out.group) + " do not divide the " +
                                                   std::to_string(out.channels) + " channels");
  }
  out.rows = static_cast<int64_t>(ElementCount(input)) / out.channels;
  out.scales_shape = out.codes_shape;
  out.scales_shape.back() = out.channels / out.group;
  return nullptr;
}

OrtStatusPtr CheckWeights(int64_t bits, int64_t k, const std::vector<int64_t>& w_shape,
                          const std::vector<int64_t>& s_shape) {
  if (w_shape.size() != 2 || w_shape[1] != static_cast<int64_t>(PackedRowBytes(bits, k))) {
    return InvalidArgument("QMatMul", "packed weight must be [N, " + std::to_string(PackedRowBytes(bits, k)) +
                                          "] for int" + std::to_string(bits) + ", got " + ShapeText(w_shape));
  }
  if (s_shape.size() != 2 || s_shape[0] != w_shape[0] || s_shape[1] <= 0 || k % s_shape[1] != 0) {
    return InvalidArgument("QMatMul", "weight scales must be [N, G] with G dividing in_features, got " +
                                          ShapeText(s_shape));
  }
  return nullptr;
}

OrtStatusPtr ReadQMatMulShape(const Ort::KernelContext& context, const QMatMulAttributes& attributes,
                              QMatMulShape& out) {
  const Ort::ConstValue codes = context.GetInput(0), token_scales = context.GetInput(1);
  const Ort::ConstValue weight = context.GetInput(2), weight_scales = context.GetInput(3);
  const std::vector<int64_t> a_shape = Shape(codes);
  if (a_shape.empty() || a_shape.back() != attributes.in_features) {
    return InvalidArgument("QMatMul", "codes must end in in_features = " + std::to_string(attributes.in_features) +
                                          ", got " + ShapeText(a_shape));
  }
  const std::vector<int64_t> w_shape = Shape(weight), s_shape = Shape(weight_scales);
  if (OrtStatusPtr status = CheckWeights(attributes.bits, attributes.in_features, w_shape, s_shape)) return status;
  out.k = static_cast<size_t>(attributes.in_features);
  out.rows = ElementCount(codes) / out.k;
  out.n = static_cast<size_t>(w_shape[0]);
  out.groups = static_cast<size_t>(s_shape[1]);
  const std::vector<int64_t> a_scales_shape = Shape(token_scales);
  out.a_groups = a_scales_shape.empty() ? 0 : static_cast<size_t>(a_scales_shape.back());
  if (out.a_groups == 0 || ElementCount(token_scales) != out.rows * out.a_groups || out.groups % out.a_groups != 0) {
    return InvalidArgument("QMatMul", "scales must be [..., A] for the " + std::to_string(out.rows) +
                                          " tokens, A dividing the weight scales' " + std::to_string(out.groups) +
                                          " groups, got " + ShapeText(a_scales_shape));
  }
  if (context.GetInputCount() > 4) {
    const Ort::ConstValue bias = context.GetInput(4);
    if (bias != nullptr && ElementCount(bias) != out.n) {
      return InvalidArgument("QMatMul", "bias must hold N = " + std::to_string(out.n) + " values");
    }
  }
  out.y_shape = a_shape;
  out.y_shape.back() = static_cast<int64_t>(out.n);
  return nullptr;
}

}  // namespace oq
