"""Small, exporter-neutral helpers for reading and editing an ``onnx_ir`` graph.

Everything that knows how one exporter spells a constant or a no-op lives here or in
:mod:`oqcompile.structure`; passes only use these helpers.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import onnx_ir as ir

__all__ = [
    "LAYOUT_OPS",
    "add_initializer",
    "append_op",
    "const_array",
    "copy_type",
    "matches",
    "dequantized_constant",
    "is_const",
    "node_meta",
    "peel_consumers",
    "peel_noop",
    "producer_op",
    "require_opset",
    "set_node_meta",
    "unique_name",
]

# Ops that move or copy elements without mixing channels of the last axis's content.
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Expand", "Unsqueeze", "Squeeze", "Identity", "Cast"})


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value`` as NumPy, else ``None``.

    Initializers, ``Constant`` outputs, and ``DequantizeLinear`` of constant codes (a
    quantized weight reads as its float value, so analysis works before and after
    quantization).
    """
    if value is None:
        return None
    if producer_op(value) == "DequantizeLinear":
        return dequantized_constant(value.producer())
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def dequantized_constant(node: ir.Node) -> np.ndarray | None:
    """``DequantizeLinear`` of constant inputs evaluated: ``(x - zero_point) · scale`` per tensor,
    per ``axis`` (1-D scale) or per block of ``block_size`` along ``axis`` (opset 21)."""
    arrays = [const_array(v) if v is not None else None for v in node.inputs]
    codes, scale = arrays[0], arrays[1]
    if codes is None or scale is None or (len(arrays) > 2 and node.inputs[2] is not None and arrays[2] is None):
        return None
    codes = codes.astype(np.float64)
    zero = arrays[2].astype(np.float64) if len(arrays) > 2 and arrays[2] is not None else 0.0
    if scale.size > 1:
        axis = node.attributes.get_int("axis", 1) % codes.ndim
        block = node.attributes.get_int("block_size", 0)
        if block:
            scale = np.repeat(scale, block, axis=axis)
            zero = np.repeat(zero, block, axis=axis) if np.ndim(zero) else zero
        else:
            shape = [1] * codes.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zero = np.reshape(zero, shape) if np.ndim(zero) else zero
    return ((codes - zero) * scale.astype(np.float64)).astype(scale.dtype)


def is_const(value: ir.Value | None) -> bool:
    """True for initializers and ``Constant`` outputs, also behind a ``Transpose``/``Cast`` or a
    ``DequantizeLinear`` of constants."""
    if value is None:
        return False
    if value.const_value is not None or producer_op(value) == "Constant":
        return True
    node = value.producer()
    if node is not None and node.op_type == "DequantizeLinear":
        return all(is_const(v) for v in node.inputs if v is not None)
    return node is not None and node.op_type in ("Transpose", "Cast") and is_const(node.inputs[0])


def producer_op(value: ir.Value) -> str | None:
    """The op type of the node producing ``value`` (``None`` for graph inputs and initializers)."""
    node = value.producer()
    return None if node is None else node.op_type


def peel_noop(value: ir.Value) -> ir.Value:
    """Step back through nodes that act on whole channel vectors without mixing channels.

    These are ``Identity``, float-to-float ``Cast`` (exporters add them freely), a ``Slice``
    over leading axes only (HF's ``logits_to_keep`` slice), a ``Reshape`` that only merges or
    splits leading axes (OPT flattens tokens to 2-D around its MLP), and an activation
    quantize-dequantize (``QuantizeLinear → [Clip] → DequantizeLinear``, see
    :mod:`oqcompile.qdq`). Channel rotations and scalings commute with the first four, and
    the last is an elementwise approximation of its input, so structure analysis sees the
    same transformer before and after quantization.
    """
    while (node := value.producer()) is not None:
        if (node.op_type == "Identity"
                or (node.op_type == "Cast" and node.attributes.get_int("to") in _FLOAT_TYPES
                    and (node.inputs[0].dtype is None or node.inputs[0].dtype.value in _FLOAT_TYPES))
                or (node.op_type == "Slice" and _slices_leading_axes_only(node))
                or (node.op_type == "Reshape" and _same_static_last_dim(node))):
            value = node.inputs[0]
        elif node.op_type == "DequantizeLinear" and (source := _quantized_activation(node)) is not None:
            value = source
        else:
            return value
    return value


def peel_consumers(value: ir.Value) -> list[ir.Node]:
    """Consumers of ``value``, looking through the nodes :func:`peel_noop` looks through
    (a quantize-dequantize counts as its ``DequantizeLinear``'s consumers)."""
    result = []
    for node in value.consumers():
        if node.op_type in ("Identity", "Cast", "Slice", "Reshape") and peel_noop(node.outputs[0]) is value:
            result += peel_consumers(node.outputs[0])
        elif node.op_type == "QuantizeLinear":
            for dequantize in _dequantizers_of(node):
                result += peel_consumers(dequantize.outputs[0])
        elif not _computes_qdq_scale(node):
            result.append(node)
    return result


def _quantized_activation(dequantize: ir.Node) -> ir.Value | None:
    """``x`` when ``dequantize`` reads ``[Clip](QuantizeLinear(x, ...))`` of a non-constant ``x``."""
    codes = dequantize.inputs[0].producer()
    if codes is not None and codes.op_type == "Clip":
        codes = codes.inputs[0].producer()
    if codes is None or codes.op_type != "QuantizeLinear" or is_const(codes.inputs[0]):
        return None
    return codes.inputs[0]


def _dequantizers_of(quantize: ir.Node) -> list[ir.Node]:
    found = []
    for node in quantize.outputs[0].consumers():
        if node.op_type == "Clip":
            found += [n for n in node.outputs[0].consumers() if n.op_type == "DequantizeLinear"]
        elif node.op_type == "DequantizeLinear":
            found.append(node)
    return found


def _computes_qdq_scale(node: ir.Node) -> bool:
    """The ``Abs`` that starts a per-token scale computation (see :mod:`oqcompile.qdq`)."""
    return node.op_type == "Abs" and node.metadata_props.get("oq.qdq") is not None


def _same_static_last_dim(node: ir.Node) -> bool:
    in_shape, out_shape = node.inputs[0].shape, node.outputs[0].shape
    return (in_shape is not None and out_shape is not None and len(in_shape) > 0 and len(out_shape) > 0
            and isinstance(in_shape[-1], int) and in_shape[-1] == out_shape[-1])


def _slices_leading_axes_only(node: ir.Node) -> bool:
    """The Slice leaves the last axis whole: by its constant axes, or by equal static last dims."""
    in_shape, out_shape = node.inputs[0].shape, node.outputs[0].shape
    axes = const_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    if axes is not None and in_shape is not None:
        rank = len(in_shape)
        return all(int(a) % rank != rank - 1 for a in axes.reshape(-1))
    steps = const_array(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    unit_steps = (len(node.inputs) <= 4 or node.inputs[4] is None) or (
        steps is not None and bool(np.all(steps == 1)))
    return (unit_steps and in_shape is not None and out_shape is not None
            and isinstance(in_shape[-1], int) and in_shape[-1] == out_shape[-1])


_FLOAT_TYPES = frozenset(t.value for t in (ir.DataType.FLOAT, ir.DataType.FLOAT16,
                                           ir.DataType.BFLOAT16, ir.DataType.DOUBLE))


def unique_name(graph: ir.Graph, base: str) -> str:
    """``base`` or ``base.N``: a name no initializer of ``graph`` uses yet."""
    name, counter = base, 1
    while name in graph.initializers:
        name = f"{base}.{counter}"
        counter += 1
    return name


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray,
                    dtype: ir.DataType | None = None) -> ir.Value:
    """Register ``array`` (stored as ``dtype``, e.g. INT4, if given) as a new initializer named
    (uniquely) after ``name``."""
    tensor = ir.tensor(np.asarray(array, order="C"), dtype=dtype)  # keeps 0-d arrays 0-d
    value = ir.Value(name=unique_name(graph, name), const_value=tensor)
    value.shape = ir.Shape(array.shape)
    value.dtype = value.const_value.dtype
    graph.register_initializer(value)
    return value


def append_op(value: ir.Value, op: str, operand: ir.Value, name: str, doc: str = "") -> ir.Node:
    """Insert ``op(value, operand)`` right after ``value``'s producer; every former use of
    ``value`` (graph outputs included) reads the new node's output instead."""
    node = ir.node(op, [value, operand], name=name, doc_string=doc or None)
    copy_type(value, node.outputs[0])
    value.replace_all_uses_with(node.outputs[0], replace_graph_outputs=True)
    node.replace_input_with(0, value)
    value.producer().graph.insert_after(value.producer(), node)
    return node


def require_opset(model: ir.Model, version: int) -> None:
    """Raise the default-domain opset to at least ``version`` (e.g. 21 for INT4 and blocked QDQ)."""
    model.opset_imports[""] = max(model.opset_imports.get("", version), version)


def matches(name: str, patterns) -> bool:
    """``name`` matches one of the ``fnmatch`` ``patterns`` (e.g. ``layers.2*.mlp.down_proj``)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def set_node_meta(node: ir.Node, **entries: str) -> None:
    """Record ``oq.<key> = value`` in the node's metadata (shown by Netron, read by later passes)."""
    for key, entry in entries.items():
        node.metadata_props[f"oq.{key}"] = str(entry)


def node_meta(node: ir.Node, key: str) -> str | None:
    """The ``oq.<key>`` metadata entry of ``node``, if any."""
    return node.metadata_props.get(f"oq.{key}")


def copy_type(source: ir.Value, target: ir.Value) -> None:
    """Give ``target`` the dtype and shape of ``source`` where those are known."""
    if source.type is not None:
        target.type = source.type
    if source.shape is not None:
        target.shape = source.shape
