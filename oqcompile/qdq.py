"""Activation quantize-dequantize (QDQ) subgraphs in standard ONNX (opset 21).

Symmetric ``b``-bit codes (:mod:`oqcompile.quant`): ``q = clip(round(x / s), -2^(b-1), 2^(b-1) - 1)``,
``x̂ = s · q``. Three ways to choose ``s``:

- ``per_token`` (dynamic): ``s_t = clip · max_j |x_tj| / (2^(b-1) - 1)`` for every token ``t``,
  computed in the graph: ``Abs → ReduceMax(axis -1) → Mul → Max(tiny)``, then
  ``QuantizeLinear``/``DequantizeLinear`` with ``axis=-1, block_size=channels`` (one block
  per token);
- ``per_tensor`` (static): one constant ``s`` from calibration;
- ``prescaled``: ``s = 1``: OutlierTune has already folded ``1 / s_j`` into the producer,
  so the activation is in code units and quantizing is rounding and clipping only.

Codes are INT8 (8 and 6 bits; 6-bit codes pass a ``Clip`` to ``[-32, 31]``) or INT4. All
nodes of one QDQ share a name prefix and carry ``oq.qdq*`` metadata, for Netron and for
the lowering pass.

The KV cache uses *asymmetric* groups instead (:func:`insert_group_qdq`): every ``group``
consecutive channels of a token (one head, or part of one) get
``s = (max - min) / (2^b - 1)`` and the zero point ``z = round(-min / s)``, codes
``q = clip(round(x / s) + z, 0, 2^b - 1)`` in a UINT8 container, ``x̂ = s · (q - z)``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from oqcompile.graph import add_initializer, copy_type, set_node_meta
from oqcompile.quant import qmax, qrange

__all__ = ["GRANULARITIES", "insert_activation_qdq", "insert_group_qdq"]

GRANULARITIES = ("per_token", "per_tensor", "prescaled")


def insert_activation_qdq(value: ir.Value, consumers: list[ir.Node], *, bits: int, granularity: str,
                          name: str, channels: int, clip: float = 1.0,
                          scale: float | None = None) -> ir.Value:
    """Insert a QDQ of ``value`` and make ``consumers`` read its output; return that output.

    ``scale`` is the static scale of ``per_tensor``; ``channels`` the size of the last axis.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    graph = value.graph or consumers[0].graph
    dtype = (value.dtype or ir.DataType.FLOAT).numpy()
    prefix = f"{name}/quantize_input"
    build = _Builder(graph, prefix)
    const, emit, nodes = build.const, build.emit, build.nodes

    block = {}
    if granularity == "per_token":
        absmax = emit("ReduceMax", [emit("Abs", [value], "abs"), const("axes", np.array([-1], np.int64))],
                      "absmax", keepdims=1)
        # clip / qmax as a float32 division, the same number oq.QuantizePerToken computes.
        factor = np.array(np.float32(clip) / np.float32(qmax(bits)), dtype)
        scaled = emit("Mul", [absmax, const("clip_over_qmax", factor)], "scale")
        step = emit("Max", [scaled, const("tiny", np.array(np.finfo(dtype).tiny, dtype))], "nonzero_scale")
        block = {"axis": -1, "block_size": channels}
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
    for node in nodes:
        node.doc_string = (f"int{bits} {granularity.replace('_', '-')} quantize-dequantize of the input "
                           f"of {name}.")
        set_node_meta(node, qdq=prefix, qdq_bits=bits, qdq_granularity=granularity, qdq_clip=clip)
    producer = value.producer()
    if producer is not None and producer.graph is graph:
        graph.insert_after(producer, nodes)
    else:
        graph.insert_before(consumers[0], nodes)
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
    build = _Builder(graph, prefix)
    const, emit, nodes = build.const, build.emit, build.nodes

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
    for node in nodes:
        node.doc_string = f"int{bits} asymmetric quantize-dequantize of {name} in groups of {group} channels."
        set_node_meta(node, qdq=prefix, qdq_bits=bits, qdq_granularity="asymmetric_group", qdq_group=group)
    graph.insert_after(value.producer(), nodes)
    for node, index in former_uses:
        node.replace_input_with(index, restored)
    return restored


class _Builder:
    """Collects the nodes of one QDQ subgraph, all named ``<prefix>/<tag>``."""

    def __init__(self, graph: ir.Graph, prefix: str):
        self.graph, self.prefix, self.nodes = graph, prefix, []

    def const(self, tag: str, array: np.ndarray, kind: ir.DataType | None = None) -> ir.Value:
        return add_initializer(self.graph, f"{self.prefix}.{tag}", array, kind)

    def emit(self, op: str, inputs: list, tag: str, **attributes) -> ir.Value:
        node = ir.node(op, inputs, attributes=attributes, name=f"{self.prefix}/{tag}")
        self.nodes.append(node)
        return node.outputs[0]
