"""Small, exporter-neutral helpers for reading and editing an ``onnx_ir`` graph.

Everything that knows how one exporter spells a constant or a no-op lives here or in
:mod:`oqcompile.structure`; passes only use these helpers.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = [
    "LAYOUT_OPS",
    "add_initializer",
    "const_array",
    "copy_type",
    "is_const",
    "node_meta",
    "peel_consumers",
    "peel_noop",
    "producer_op",
    "set_node_meta",
    "unique_name",
]

# Ops that move or copy elements without mixing channels of the last axis's content.
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Expand", "Unsqueeze", "Squeeze", "Identity", "Cast"})


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value`` (initializer or ``Constant`` node) as NumPy, else ``None``."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def is_const(value: ir.Value | None) -> bool:
    """True for initializers and ``Constant`` outputs, also behind a ``Transpose``/``Cast``."""
    if value is None:
        return False
    if value.const_value is not None or producer_op(value) == "Constant":
        return True
    node = value.producer()
    return node is not None and node.op_type in ("Transpose", "Cast") and is_const(node.inputs[0])


def producer_op(value: ir.Value) -> str | None:
    """The op type of the node producing ``value`` (``None`` for graph inputs and initializers)."""
    node = value.producer()
    return None if node is None else node.op_type


def peel_noop(value: ir.Value) -> ir.Value:
    """Step back through nodes that act on whole channel vectors without changing them.

    These are ``Identity``, float-to-float ``Cast`` (exporters add them freely) and a ``Slice``
    over leading axes only (HF's ``logits_to_keep`` slice), and a ``Reshape`` that only merges or
    splits leading axes (OPT flattens tokens to 2-D around its MLP). Channel rotations and scalings
    commute with all of them, so they are transparent to every rewrite in oqcompile.
    """
    while (node := value.producer()) is not None and (
        node.op_type == "Identity"
        or (node.op_type == "Cast" and node.attributes.get_int("to") in _FLOAT_TYPES
            and (node.inputs[0].dtype is None or node.inputs[0].dtype.value in _FLOAT_TYPES))
        or (node.op_type == "Slice" and _slices_leading_axes_only(node))
        or (node.op_type == "Reshape" and _same_static_last_dim(node))
    ):
        value = node.inputs[0]
    return value


def peel_consumers(value: ir.Value) -> list[ir.Node]:
    """Consumers of ``value``, looking through the nodes :func:`peel_noop` looks through."""
    result = []
    for node in value.consumers():
        if node.op_type in ("Identity", "Cast", "Slice", "Reshape") and peel_noop(node.outputs[0]) is value:
            result += peel_consumers(node.outputs[0])
        else:
            result.append(node)
    return result


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


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as a new initializer named (uniquely) after ``name``."""
    value = ir.Value(name=unique_name(graph, name), const_value=ir.tensor(np.ascontiguousarray(array)))
    value.shape = ir.Shape(array.shape)
    value.dtype = value.const_value.dtype
    graph.register_initializer(value)
    return value


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
