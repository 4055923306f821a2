"""Lowering: the portable QDQ and Hadamard patterns become ``oq`` custom ops with packed weights.

Rules (every other node stays as it is, so a partly lowerable graph still runs):

- An online rotation emitted by :func:`oqcompile.rotation.insert_hadamard`, ``y = x · H_n``
  with ``H_n = H_a ⊗ H_b`` (``b`` a power of two, ``H_b`` Sylvester and symmetric), becomes
  ``oq.Hadamard(x, F)`` with ``F = H_a`` (``H_aᵀ`` for an inverse), or no ``F`` when ``a`` is
  a power of two too (then ``H_n`` is Sylvester of order ``n``).
- A symmetric activation QDQ (``oq.qdq*`` metadata: per-token, per-tensor or prescaled) of
  ``x`` that feeds linears ``y = x̂ Ŵ (+ b)``, ``Ŵ = DequantizeLinear(q_W, s_W)`` with constant
  symmetric codes, becomes one ``codes, s = oq.QuantizePerToken(x)`` shared by those linears
  and, per linear, ``y = oq.QMatMul(codes, s, pack(q_Wᵀ), s_Wᵀ, b)``: the same
  ``y_tn = s_t Σ_g s_W[g, n] Σ_{k∈g} q_tk q_W[k, n] + b_n`` in exact integer group sums.
  Weights are packed in the narrowest of 4/6/8 bits that holds their codes (lossless:
  6-bit codes stored in INT8 by the portable graph take 3/4 of a byte).
  Consumers of the QDQ that are not such linears keep reading the portable QDQ.

The model then imports the ``oq`` domain and its metadata ``oq.runtime_library`` names the
library it needs (:mod:`oqcompile.runtime`). The KV-cache QDQ (asymmetric groups) and
MatMulNBits weights stay portable: ORT runs those natively.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from oqcompile.graph import add_initializer, const_array, copy_type, is_const, node_meta, set_node_meta
from oqcompile.hadamard import kronecker_factors, kronecker_pair
from oqcompile.passes.base import TransformerPass
from oqcompile.quant import pack_codes, qrange
from oqcompile.rotation import Rotation, find_rotations
from oqcompile.runtime import DOMAIN, LIBRARY_METADATA, library_description

__all__ = ["Lower"]

logger = logging.getLogger(__name__)

_FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)
_SYMMETRIC_GRANULARITIES = ("per_token", "per_tensor", "prescaled")


@dataclasses.dataclass
class _QuantizedLinear:
    """A lowerable consumer of an activation QDQ: MatMul/Gemm with a DequantizeLinear weight."""

    node: ir.Node
    name: str
    codes: np.ndarray  # [K, N] integer codes
    scales: np.ndarray  # [groups, N] float32
    bias: np.ndarray | None  # [N] float32
    bias_node: ir.Node | None  # the Add that the bias came from, if any
    output: ir.Value  # what the lowered op replaces


@dataclasses.dataclass
class Lower(TransformerPass):
    """Replace online Hadamards and weight-and-activation-quantized linears by ``oq`` ops."""

    name = "lower"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        hadamards = sum(_lower_rotation(graph, rotation) for rotation in find_rotations(graph) if rotation.online)
        linears = sum(_lower_qdq(graph, dequantize) for dequantize in _activation_dequantizers(graph))
        if hadamards or linears:
            model.opset_imports[DOMAIN] = 1
            model.metadata_props[LIBRARY_METADATA] = library_description()
        logger.info("lowered %d Hadamard rotations and %d quantized linears", hadamards, linears)
        return ir.passes.PassResult(model, modified=bool(hadamards or linears))


def _lower_rotation(graph: ir.Graph, rotation: Rotation) -> bool:
    if rotation.input.dtype not in _FLOAT_TYPES:
        return False
    a, _ = kronecker_factors(rotation.size)
    inputs = [rotation.input]
    if a & (a - 1):  # a = K · 2^j: the dense K x K factor goes along
        h_a, _ = kronecker_pair(rotation.size)
        factor = h_a.T if rotation.inverse else h_a
        inputs.append(add_initializer(graph, f"hadamard.factor.{a}{'.T' if rotation.inverse else ''}",
                                      factor.astype(np.float32)))
    node = ir.node("Hadamard", inputs, domain=DOMAIN, name=rotation.name)
    node.doc_string = (f"{'Inverse ' if rotation.inverse else ''}Hadamard rotation of size {rotation.size} "
                       f"on the last axis (fast Walsh-Hadamard transform), lowered by oqcompile.")
    set_node_meta(node, rotation=rotation.name, rotation_size=rotation.size,
                  rotation_inverse=int(rotation.inverse), rotation_online=int(rotation.online))
    graph.insert_before(rotation.nodes[0], node)
    _take_over(graph, rotation.output, node.outputs[0], rotation.nodes)
    return True


def _take_over(graph: ir.Graph, old: ir.Value, new: ir.Value, replaced: list[ir.Node]) -> None:
    """Make ``new`` (type, name and every use of ``old``) stand in for ``old``; delete ``replaced``."""
    copy_type(old, new)
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    graph.remove(replaced, safe=True)
    new.name = old.name


def _activation_dequantizers(graph: ir.Graph) -> list[ir.Node]:
    """The DequantizeLinear closing each symmetric activation QDQ, in graph order."""
    return [node for node in graph if node.op_type == "DequantizeLinear" and node_meta(node, "qdq")
            and node_meta(node, "qdq_granularity") in _SYMMETRIC_GRANULARITIES]


def _lower_qdq(graph: ir.Graph, dequantize: ir.Node) -> int:
    restored = dequantize.outputs[0]
    linears = [linear for node, index in list(restored.uses()) if index == 0
               and (linear := _quantized_linear(node)) is not None]
    quantize = dequantize.inputs[0].producer()
    if quantize.op_type == "Clip":  # 6-bit codes
        quantize = quantize.inputs[0].producer()
    source = quantize.inputs[0]
    if not linears or source.dtype not in _FLOAT_TYPES:
        return 0
    prefix = node_meta(dequantize, "qdq")
    bits = int(node_meta(dequantize, "qdq_bits"))
    granularity = node_meta(dequantize, "qdq_granularity")
    attributes = {"bits": bits, "clip": float(node_meta(dequantize, "qdq_clip") or 1.0)}
    if granularity != "per_token":
        attributes["static_scale"] = float(const_array(quantize.inputs[1]))
    quantizer = ir.node("QuantizePerToken", [source], attributes=attributes, domain=DOMAIN,
                        name=f"{prefix}/quantize_per_token", num_outputs=2)
    quantizer.doc_string = f"int{bits} {granularity.replace('_', '-')} quantization to codes and scales."
    codes, scales = quantizer.outputs
    codes.name, scales.name = f"{prefix}.codes", f"{prefix}.scales"
    codes.dtype, scales.dtype = ir.DataType.INT8, source.dtype
    graph.insert_before(linears[0].node, quantizer)
    for linear in linears:
        _replace_linear(graph, linear, codes, scales)
    return len(linears)


def _quantized_linear(node: ir.Node) -> _QuantizedLinear | None:
    """``node`` as a lowerable linear, or None (other op, non-constant or asymmetric weight, ...)."""
    if node.op_type == "Gemm":
        attributes = node.attributes
        if (attributes.get_int("transA", 0) or attributes.get_int("transB", 0)
                or attributes.get_float("alpha", 1.0) != 1.0 or attributes.get_float("beta", 1.0) != 1.0):
            return None
    elif node.op_type != "MatMul":
        return None
    weight = node.inputs[1].producer()
    if weight is None or weight.op_type != "DequantizeLinear" or not is_const(node.inputs[1]):
        return None
    codes, scales = const_array(weight.inputs[0]), const_array(weight.inputs[1])
    zero = const_array(weight.inputs[2]) if len(weight.inputs) > 2 and weight.inputs[2] is not None else None
    if codes is None or codes.ndim != 2 or (zero is not None and np.any(zero)):
        return None
    rows, cols = codes.shape
    block = weight.attributes.get_int("block_size", 0)
    axis = weight.attributes.get_int("axis", 1) % 2
    if scales.ndim == 1 and axis == 1 and not block and scales.size == cols:
        scales = scales[None, :]
    elif not (scales.ndim == 2 and axis == 0 and block and scales.shape == (rows // block, cols)
              and rows % block == 0):
        return None
    bias, bias_node, output = None, None, node.outputs[0]
    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = const_array(node.inputs[2])
        if bias is None or bias.size != cols:
            return None
    else:
        uses = list(output.uses())
        if len(uses) == 1 and uses[0][0].op_type == "Add" and output not in output.graph.outputs:
            add = uses[0][0]
            candidate = const_array(add.inputs[1 - uses[0][1]])
            if candidate is not None and candidate.shape == (cols,):
                bias, bias_node, output = candidate, add, add.outputs[0]
    name = weight.name.removesuffix("/dequantize_weight") if weight.name else node.name
    return _QuantizedLinear(node, name, codes.astype(np.int8), scales.astype(np.float32),
                            None if bias is None else bias.reshape(-1).astype(np.float32), bias_node, output)


def _replace_linear(graph: ir.Graph, linear: _QuantizedLinear, codes: ir.Value, scales: ir.Value) -> None:
    in_features, out_features = linear.codes.shape
    bits = next(b for b in (4, 6, 8) if qrange(b)[0] <= linear.codes.min() and linear.codes.max() <= qrange(b)[1])
    inputs = [codes, scales,
              add_initializer(graph, f"{linear.name}.weight_packed_int{bits}", pack_codes(linear.codes, bits)),
              add_initializer(graph, f"{linear.name}.weight_scales", np.ascontiguousarray(linear.scales.T))]
    if linear.bias is not None:
        inputs.append(add_initializer(graph, f"{linear.name}.bias_float32", linear.bias))
    node = ir.node("QMatMul", inputs, attributes={"bits": bits, "in_features": in_features}, domain=DOMAIN,
                   name=f"{linear.name}/qmatmul")
    groups = linear.scales.shape[0]
    node.doc_string = (f"int{bits} x int8-code matmul of {linear.name} ({in_features} -> {out_features}), "
                       + ("one weight scale per output channel" if groups == 1
                          else f"weight scales per {in_features // groups} input channels")
                       + (", bias added" if linear.bias is not None else "") + ".")
    set_node_meta(node, weight_bits=bits)
    graph.insert_before(linear.node, node)
    _take_over(graph, linear.output, node.outputs[0], [n for n in (linear.bias_node, linear.node) if n])
