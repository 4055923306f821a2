"""Quantize-dequantize (QDQ) in standard ONNX (opset 21): every form oqcompile writes, and its readers.

This module is the one home of the QDQ formats: the passes write them through it
(``insert_qdq``, ``quantize_kv``, ``quantize_weights``, ``outliertune``) and read them back through
it (``lower``, the structure analysis, the benchmarks).

**Activations.**
Symmetric ``b``-bit codes (:mod:`oqcompile.quant`): ``q = clip(round(x / s), -2^(b-1), 2^(b-1) - 1)``,
``x̂ = s · q``. Three ways to choose ``s``:

- ``per_token`` (dynamic): ``s_t = clip · max_j |x_tj| / (2^(b-1) - 1)`` for every token ``t``,
  computed in the graph: ``Abs → ReduceMax(axis -1) → Mul → Max(tiny)``, then
  ``QuantizeLinear``/``DequantizeLinear`` with ``axis=-1, block_size=channels`` (one block
  per token); with a ``group``, one scale per ``group`` consecutive channels of a token
  (``s_tg = clip · max_{j∈g} |x_tj| / (2^(b-1) - 1)``: the ``Abs`` is reshaped to
  ``[..., channels / group, group]`` before the ``ReduceMax``, and ``block_size=group``);
- ``per_tensor`` (static): one constant ``s`` from calibration;
- ``prescaled``: ``s = 1``: OutlierTune has already folded ``1 / s_j`` into the producer,
  so the activation is in code units and quantizing is rounding and clipping only.

Codes are INT8 (8 and 6 bits; 6-bit codes pass a ``Clip`` to ``[-32, 31]``) or INT4. All
nodes of one QDQ share a name prefix and carry a :class:`QDQTag` (``oq.qdq*`` node metadata),
for Netron and for the lowering pass; :func:`activation_qdqs` finds them again. Linears whose
input OutlierTune already put in code units are marked by :func:`mark_prescaled`.

The KV cache uses *asymmetric* groups instead (:func:`insert_group_qdq`): every ``group``
consecutive channels of a token (one head, or part of one) get
``s = (max - min) / (2^b - 1)`` and the zero point ``z = round(-min / s)``, codes
``q = clip(round(x / s) + z, 0, 2^b - 1)`` in a UINT8 container, ``x̂ = s · (q - z)``.

**Weights** (:func:`dequantize_weight`, read back by :func:`read_quantized_weight`):
``Ŵ = DequantizeLinear(Q, s)`` with integer codes ``Q`` ``[in, out]`` (INT4 for 4 bits, INT8 for 6
and 8) and scales ``[out]`` on ``axis=1`` per output channel, or ``[in / g, out]`` on ``axis=0``
with ``block_size=g`` per group of ``g`` input rows (:class:`oqcompile.quant.QuantizedWeight`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from oqcompile.graph import NodeMetadata, add_initializer, const_array, copy_type, is_const
from oqcompile.quant import QuantizedWeight, qmax, qrange

__all__ = ["GRANULARITIES", "ActivationQDQ", "QDQTag", "activation_qdqs", "computes_scale", "dequantize_weight",
           "dequantizers", "insert_activation_qdq", "insert_group_qdq", "is_prescaled", "mark_prescaled",
           "quantized_input", "quantized_weight_name", "read_quantized_weight"]

GRANULARITIES = ("per_token", "per_tensor", "prescaled")  # the symmetric activation QDQs
KV_GRANULARITY = "asymmetric_group"


@dataclasses.dataclass(frozen=True)
class QDQTag(NodeMetadata):
    """On every node of one QDQ subgraph: ``oq.qdq`` (its name prefix), ``oq.qdq_bits``, ... ."""

    KEY = "qdq"
    name: str
    bits: int
    granularity: str  # one of GRANULARITIES, or KV_GRANULARITY
    clip: float | None = None  # per-token clip ratio (symmetric QDQs only)
    group: int | None = None  # per-token scales per this many channels (None: one per token)


@dataclasses.dataclass
class ActivationQDQ:
    """One symmetric activation QDQ found in a graph: ``output = DQ([Clip](Q(source)))``."""

    tag: QDQTag
    source: ir.Value
    dequantize: ir.Node
    static_scale: float | None  # per_tensor and prescaled: the constant scale

    @property
    def output(self) -> ir.Value:
        return self.dequantize.outputs[0]


def insert_activation_qdq(value: ir.Value, consumers: list[ir.Node], *, bits: int, granularity: str,
                          name: str, channels: int, clip: float = 1.0,
                          scale: float | None = None, group: int | None = None) -> ir.Value:
    """Insert a QDQ of ``value`` and make ``consumers`` read its output; return that output.

    ``scale`` is the static scale of ``per_tensor``; ``channels`` the size of the last axis;
    ``group`` the channels per scale of ``per_token`` (``None``: all of them).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    if group is not None and (granularity != "per_token" or channels % group):
        raise ValueError(f"{name}: groups of {group} need per_token scales and divide the {channels} channels")
    graph = value.graph or consumers[0].graph
    dtype = (value.dtype or ir.DataType.FLOAT).numpy()
    prefix = f"{name}/quantize_input"
    tape, const, emit = _builder(graph, prefix)

    block = {}
    if granularity == "per_token":
        magnitude = emit("Abs", [value], "abs")
        if group is not None:
            grouped_shape = emit("Concat", [emit("Shape", [value], "lead_shape", end=-1),
                                            const("group_shape", np.array([channels // group, group], np.int64))],
                                 "grouped_shape", axis=0)
            magnitude = emit("Reshape", [magnitude, grouped_shape], "group")
        absmax = emit("ReduceMax", [magnitude, const("axes", np.array([-1], np.int64))], "absmax",
                      keepdims=int(group is None))
        # clip / qmax as a float32 division, the same number oq.QuantizePerToken computes.
        factor = np.array(np.float32(clip) / np.float32(qmax(bits)), dtype)
        scaled = emit("Mul", [absmax, const("clip_over_qmax", factor)], "scale")
        step = emit("Max", [scaled, const("tiny", np.array(np.finfo(dtype).tiny, dtype))], "nonzero_scale")
        block = {"axis": -1, "block_size": group or channels}
    else:
        static = 1.0 if granularity == "prescaled" else scale
        if static is None or not static > 0:
            raise ValueError(f"{name}: a positive static scale is needed, got {static}")
        step = const("scale", np.array(static, dtype))
    code_type = ir.DataType.INT4 if bits == 4 else ir.DataType.INT8
    codes = emit("QuantizeLinear", [value, step], "quantize", output_dtype=code_type.value, **block)
    if bits == 6:
        low, high = qrange(bits)
        codes = emit("Clip", [codes, const("low", np.array(low, np.int8), ir.DataType.INT8),
                              const("high", np.array(high, np.int8), ir.DataType.INT8)], "clip6")
    restored = emit("DequantizeLinear", [codes, step], "dequantize", **block)
    restored.name = f"{name}.input_quantized"
    copy_type(value, restored)
    tag = QDQTag(prefix, bits, granularity, clip, group)
    in_groups = "" if group is None else f" in groups of {group} channels"
    for node in tape.nodes:
        node.doc_string = (f"int{bits} {granularity.replace('_', '-')} quantize-dequantize{in_groups} of the input "
                           f"of {name}.")
        tag.write(node)
    producer = value.producer()
    if producer is not None and producer.graph is graph:
        graph.insert_after(producer, tape.nodes)
    else:
        graph.insert_before(consumers[0], tape.nodes)
    for consumer in consumers:
        for index, input_value in enumerate(consumer.inputs):
            if input_value is value:
                consumer.replace_input_with(index, restored)
    return restored


def insert_group_qdq(value: ir.Value, *, bits: int, group: int, name: str) -> ir.Value:
    """Asymmetric ``bits``-bit QDQ of ``value`` in groups of ``group`` channels of its last axis
    (see module doc). Every former use of ``value`` reads the result, which is returned."""
    graph = value.graph
    dtype = (value.dtype or ir.DataType.FLOAT).numpy()
    prefix = f"{name}/quantize"
    former_uses = list(value.uses())
    tape, const, emit = _builder(graph, prefix)

    levels = (1 << bits) - 1
    lead = emit("Shape", [value], "lead_shape", end=-1)
    grouped_shape = emit("Concat", [lead, const("group_shape", np.array([-1, group], np.int64))],
                         "grouped_shape", axis=0)
    grouped = emit("Reshape", [value, grouped_shape], "group")
    axes = const("axes", np.array([-1], np.int64))
    low = emit("ReduceMin", [grouped, axes], "min", keepdims=1)
    high = emit("ReduceMax", [grouped, axes], "max", keepdims=1)
    span = emit("Sub", [high, low], "range")
    step = emit("Max", [emit("Div", [span, const("levels", np.array(levels, dtype))], "raw_scale"),
                        const("tiny", np.array(np.finfo(dtype).tiny, dtype))], "scale")
    zero_float = emit("Clip", [emit("Round", [emit("Div", [emit("Neg", [low], "neg_min"), step], "raw_zero")],
                                    "round_zero"),
                               const("zero_low", np.array(0, dtype)), const("zero_high", np.array(levels, dtype))],
                      "zero")
    zero = emit("Cast", [zero_float], "zero_uint8", to=ir.DataType.UINT8.value)
    block = {"axis": -1, "block_size": group}
    codes = emit("QuantizeLinear", [grouped, step, zero], "quantize", **block)
    if bits < 8:
        codes = emit("Clip", [codes, const("code_low", np.array(0, np.uint8), ir.DataType.UINT8),
                              const("code_high", np.array(levels, np.uint8), ir.DataType.UINT8)], f"clip{bits}")
    restored = emit("Reshape", [emit("DequantizeLinear", [codes, step, zero], "dequantize", **block),
                                emit("Shape", [value], "shape")], "ungroup")
    restored.name = f"{name}.quantized"
    copy_type(value, restored)
    tag = QDQTag(prefix, bits, KV_GRANULARITY)
    for node in tape.nodes:
        node.doc_string = f"int{bits} asymmetric quantize-dequantize of {name} in groups of {group} channels."
        tag.write(node)
    graph.insert_after(value.producer(), tape.nodes)
    for node, index in former_uses:
        node.replace_input_with(index, restored)
    return restored


def activation_qdqs(graph: ir.Graph) -> list[ActivationQDQ]:
    """Every symmetric activation QDQ written by :func:`insert_activation_qdq`, in graph order."""
    found = []
    for node in graph:
        tag = QDQTag.read(node)
        if node.op_type != "DequantizeLinear" or tag is None or tag.granularity not in GRANULARITIES:
            continue
        quantize = _quantize_of(node)
        static_scale = None if tag.granularity == "per_token" else float(const_array(quantize.inputs[1]))
        found.append(ActivationQDQ(tag, quantize.inputs[0], node, static_scale))
    return found


def quantized_input(dequantize: ir.Node) -> ir.Value | None:
    """``x`` when ``dequantize`` reads ``[Clip](QuantizeLinear(x, ...))`` of a non-constant ``x``
    (any activation QDQ, whoever wrote it)."""
    quantize = _quantize_of(dequantize)
    if quantize is None or is_const(quantize.inputs[0]):
        return None
    return quantize.inputs[0]


def _quantize_of(dequantize: ir.Node) -> ir.Node | None:
    """The ``QuantizeLinear`` whose codes ``dequantize`` reads, directly or through a (6-bit) ``Clip``."""
    codes = dequantize.inputs[0].producer()
    if codes is not None and codes.op_type == "Clip":
        codes = codes.inputs[0].producer()
    return codes if codes is not None and codes.op_type == "QuantizeLinear" else None


def dequantizers(quantize: ir.Node) -> list[ir.Node]:
    """The ``DequantizeLinear`` nodes reading the codes of ``quantize`` (through a 6-bit ``Clip``)."""
    found = []
    for node in quantize.outputs[0].consumers():
        if node.op_type == "Clip":
            found += [n for n in node.outputs[0].consumers() if n.op_type == "DequantizeLinear"]
        elif node.op_type == "DequantizeLinear":
            found.append(node)
    return found


def computes_scale(node: ir.Node) -> bool:
    """``node`` is the ``Abs`` that starts a per-token scale computation of an activation QDQ."""
    return node.op_type == "Abs" and QDQTag.read(node) is not None


def mark_prescaled(linear_node: ir.Node) -> None:
    """Record that the input of this linear is already in code units (OutlierTune's pre-executed scales)."""
    linear_node.metadata_props[_PRESCALED] = "1"


def is_prescaled(linear_node: ir.Node) -> bool:
    return linear_node.metadata_props.get(_PRESCALED) == "1"


_PRESCALED = "oq.prescaled_input"


def dequantize_weight(linear_node: ir.Node, name: str, weight: QuantizedWeight, float_type: ir.DataType) -> ir.Value:
    """Insert ``DequantizeLinear`` of ``weight`` (see module doc) before ``linear_node``; return its output."""
    graph = linear_node.graph
    codes = add_initializer(graph, f"{name}.weight_int{weight.bits}", weight.codes,
                            ir.DataType.INT4 if weight.bits == 4 else ir.DataType.INT8)
    if weight.group is None:
        scales, attributes = weight.scales[0], {"axis": 1}
    else:
        scales, attributes = weight.scales, {"axis": 0, "block_size": weight.group}
    scales = add_initializer(graph, f"{name}.weight_scale", scales.astype(float_type.numpy()))
    dequantize = ir.node("DequantizeLinear", [codes, scales], attributes=attributes, name=f"{name}/dequantize_weight")
    dequantize.doc_string = (f"int{weight.bits} weight of {name}, "
                             + ("one scale per output channel." if weight.group is None
                                else f"one scale per {weight.group} input rows per output channel."))
    restored = dequantize.outputs[0]
    restored.name = f"{name}.weight_dequantized"
    restored.dtype, restored.shape = float_type, ir.Shape(weight.codes.shape)
    graph.insert_before(linear_node, dequantize)
    return restored


def quantized_weight_name(weight: ir.Value, linear_node: ir.Node) -> str:
    """The layer name :func:`dequantize_weight` gave ``weight`` (its node is ``<name>/dequantize_weight``),
    else the name of the linear's node."""
    return (weight.producer().name or linear_node.name).removesuffix("/dequantize_weight")


def read_quantized_weight(value: ir.Value) -> QuantizedWeight | None:
    """The codes and scales behind ``value`` if it is a weight :func:`dequantize_weight` can write
    (constant symmetric codes ``[in, out]``, per-channel or row-grouped scales), else ``None``.

    ``bits`` is that of the code container: 4 for INT4, 8 for INT8 (6-bit codes included).
    """
    node = value.producer()
    if node is None or node.op_type != "DequantizeLinear":
        return None
    codes, scales = const_array(node.inputs[0]), const_array(node.inputs[1])
    zero = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if codes is None or scales is None or codes.ndim != 2 or (zero is not None and np.any(zero)):
        return None
    rows, cols = codes.shape
    block = node.attributes.get_int("block_size", 0)
    axis = node.attributes.get_int("axis", 1) % 2
    if scales.ndim == 1 and axis == 1 and not block and scales.size == cols:
        scales, group = scales[None, :], None
    elif scales.ndim == 2 and axis == 0 and block and rows % block == 0 and scales.shape == (rows // block, cols):
        group = block
    else:
        return None
    bits = 4 if node.inputs[0].dtype == ir.DataType.INT4 else 8
    return QuantizedWeight(codes.astype(np.int8), scales, bits, group)


def _builder(graph: ir.Graph, prefix: str):
    """A tape for the nodes of one QDQ subgraph, ``const(tag, array)`` and ``emit(op, inputs, tag,
    **attributes)``: every initializer and node is named ``<prefix>.<tag>`` / ``<prefix>/<tag>``."""
    tape = ir.tape.Tape()

    def const(tag: str, array: np.ndarray, kind: ir.DataType | None = None) -> ir.Value:
        return add_initializer(graph, f"{prefix}.{tag}", array, kind)

    def emit(op: str, inputs: list, tag: str, **attributes) -> ir.Value:
        return tape.op(op, inputs, attributes, name=f"{prefix}/{tag}")

    return tape, const, emit
