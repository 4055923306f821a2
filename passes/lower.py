"""Lowering: the portable QDQ and Hadamard patterns become ``oq`` custom ops with packed weights.

Rules (every other node stays as it is, so a partly lowerable graph still runs):

- An online rotation emitted by :func:`oqcompile.rotation.insert_hadamard`, ``y = x · H_n``
  with ``H_n = H_K ⊗ H_m`` (``K`` the smallest order with a construction, ``m`` a power of
  two, ``H_m`` Sylvester and symmetric), becomes ``oq.Hadamard(x, F)`` with ``F = H_K``
  (``H_Kᵀ`` for an inverse), or no ``F`` when ``n`` is a power of two.
- A symmetric activation QDQ (per-token, per-tensor or prescaled, :mod:`oqcompile.qdq`) of
  ``x`` that feeds linears ``y = x̂ Ŵ (+ b)`` (:func:`oqcompile.structure.match_linear`) with
  ``Ŵ = DequantizeLinear(q_W, s_W)`` of constant symmetric codes, becomes one
  ``codes, s = oq.QuantizePerToken(x)`` shared by those linears and, per linear,
  ``y = oq.QMatMul(codes, s, pack(q_Wᵀ), s_Wᵀ, b)``: the same
  ``y_tn = Σ_g s_tg s_W[g, n] Σ_{k∈g} q_tk q_W[k, n] + b_n`` in exact integer group sums
  (``s_tg = s_t`` for one scale per token). Activation scales in groups (``s_ta``) need each to
  span whole weight groups: where the weights' groups are wider (one per channel, say), their
  scales are repeated onto the activation groups; where neither group width divides the other,
  the QDQ stays portable.
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

from oqcompile import qdq
from oqcompile.graph import FLOAT_TYPES, add_initializer, remove_if_unused
from oqcompile.hadamard import dense_factor
from oqcompile.passes.base import TransformerPass
from oqcompile.quant import QuantizedWeight, code_bits, pack_codes
from oqcompile.rotation import Rotation, find_rotations
from oqcompile.runtime import DOMAIN, LIBRARY_METADATA, library_description
from oqcompile.structure import Linear, match_linear

__all__ = ["Lower"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Lower(TransformerPass):
    """Replace online Hadamards and weight-and-activation-quantized linears by ``oq`` ops."""

    name = "lower"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        hadamards = sum(_lower_rotation(graph, rotation) for rotation in find_rotations(graph) if rotation.online)
        linears = sum(_lower_qdq(graph, activation) for activation in qdq.activation_qdqs(graph))
        if hadamards or linears:
            model.opset_imports[DOMAIN] = 1
            model.metadata_props[LIBRARY_METADATA] = library_description()
        logger.info("lowered %d Hadamard rotations and %d quantized linears", hadamards, linears)
        return ir.passes.PassResult(model, modified=bool(hadamards or linears))


def _lower_rotation(graph: ir.Graph, rotation: Rotation) -> bool:
    if rotation.input.dtype not in FLOAT_TYPES:
        return False
    inputs = [rotation.input]
    h_k = dense_factor(rotation.size)
    if h_k is not None:  # n = K · 2^k: the dense K x K factor goes along
        factor = h_k.T if rotation.inverse else h_k
        inputs.append(add_initializer(graph, f"hadamard.factor.{len(h_k)}{'.T' if rotation.inverse else ''}",
                                      factor.astype(np.float32)))
    node = ir.node("Hadamard", inputs, domain=DOMAIN, name=rotation.name)
    node.doc_string = (f"{'Inverse ' if rotation.inverse else ''}Hadamard rotation of size {rotation.size} "
                       f"on the last axis (fast Walsh-Hadamard transform), lowered by oqcompile.")
    rotation.tag.write(node)  # find_rotations still sees it
    _replace(graph, rotation.nodes, node, rotation.output)
    return True


def _replace(graph: ir.Graph, old_nodes: list[ir.Node], new_node: ir.Node, old_output: ir.Value) -> None:
    """Put ``new_node`` where the first of ``old_nodes`` was and delete them; its output takes over
    ``old_output`` (type, name and every use)."""
    ir.convenience.replace_nodes_and_values(graph, old_nodes[0], old_nodes, [new_node], [old_output],
                                            [new_node.outputs[0]])


def _lower_qdq(graph: ir.Graph, activation: qdq.ActivationQDQ) -> int:
    linears = [(linear, weight) for node, index in list(activation.output.uses()) if index == 0
               and (linear := match_linear(node)) is not None and not linear.transposed
               and (weight := qdq.read_quantized_weight(linear.weight_value())) is not None]
    source, tag = activation.source, activation.tag
    if not linears or source.dtype not in FLOAT_TYPES:
        return 0
    if tag.group is not None:
        weight_groups = [_scales_per_activation_group(weight, tag.group) for _, weight in linears]
        if None in weight_groups:
            logger.warning("%s: activation groups of %d do not hold whole weight groups; the portable QDQ stays",
                           tag.name, tag.group)
            return 0
        linears = [(linear, weight if repeat == 1 else dataclasses.replace(
                        weight, scales=np.repeat(weight.scales, repeat, axis=0), group=tag.group))
                   for (linear, weight), repeat in zip(linears, weight_groups)]
    attributes = {"bits": tag.bits, "clip": tag.clip, **({} if tag.group is None else {"group": tag.group})}
    if activation.static_scale is not None:
        attributes["static_scale"] = activation.static_scale
    quantizer = ir.node("QuantizePerToken", [source], attributes=attributes, domain=DOMAIN,
                        name=f"{tag.name}/quantize_per_token", num_outputs=2)
    quantizer.doc_string = f"int{tag.bits} {tag.granularity.replace('_', '-')} quantization to codes and scales."
    codes, scales = quantizer.outputs
    codes.name, scales.name = f"{tag.name}.codes", f"{tag.name}.scales"
    codes.dtype, scales.dtype = ir.DataType.INT8, source.dtype
    graph.insert_before(linears[0][0].node, quantizer)
    for linear, weight in linears:
        _replace_linear(graph, linear, weight, codes, scales)
    return len(linears)


def _scales_per_activation_group(weight: QuantizedWeight, activation_group: int) -> int | None:
    """How often each weight scale repeats so that every activation group spans whole weight groups
    (1: it already does), or ``None`` where neither group width divides the other."""
    in_features, groups = weight.codes.shape[0], weight.scales.shape[0]
    if (in_features // groups) % activation_group == 0:
        return in_features // groups // activation_group
    return 1 if activation_group % (in_features // groups) == 0 else None


def _replace_linear(graph: ir.Graph, linear: Linear, weight: QuantizedWeight, codes: ir.Value,
                    scales: ir.Value) -> None:
    in_features, out_features = weight.codes.shape
    bits = code_bits(weight.codes)
    name = qdq.quantized_weight_name(linear.weight_value(), linear.node)
    inputs = [codes, scales,
              add_initializer(graph, f"{name}.weight_packed_int{bits}", pack_codes(weight.codes, bits)),
              add_initializer(graph, f"{name}.weight_scales", np.ascontiguousarray(weight.scales.T, np.float32))]
    bias = linear.bias()
    if bias is not None:
        inputs.append(add_initializer(graph, f"{name}.bias_float32", bias.reshape(-1).astype(np.float32)))
    node = ir.node("QMatMul", inputs, attributes={"bits": bits, "in_features": in_features}, domain=DOMAIN,
                   name=f"{name}/qmatmul")
    groups = weight.scales.shape[0]
    node.doc_string = (f"int{bits} x int8-code matmul of {name} ({in_features} -> {out_features}), "
                       + ("one weight scale per output channel" if groups == 1
                          else f"weight scales per {in_features // groups} input channels")
                       + (", bias added" if bias is not None else "") + ".")
    replaced = [linear.node] + ([linear.bias_slot[0]] if linear.bias_slot and linear.bias_slot[0] is not linear.node
                                else [])
    old_weight = linear.weight_value()
    _replace(graph, replaced, node, linear.output)
    remove_if_unused(old_weight)  # the codes read above go now, not when the pass ends
