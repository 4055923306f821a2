"""Small, exporter-neutral helpers for reading and editing an ``onnx_ir`` graph.

Constants (initializers, ``Constant`` nodes, ``DequantizeLinear`` of constants) are read here;
how an exporter spells a linear, a norm or a no-op is :mod:`oqcompile.structure`'s business.
Records that one pass leaves on nodes for another are :class:`NodeMetadata`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from oqcompile import scratch

__all__ = [
    "FLOAT_TYPES",
    "LAYOUT_OPS",
    "NodeMetadata",
    "add_initializer",
    "append_op",
    "const_array",
    "copy_type",
    "matches",
    "dequantized_constant",
    "is_const",
    "producer_op",
    "remove_if_unused",
    "replace_input",
    "require_opset",
    "transposed_constant",
    "unique_name",
]

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)  # the float types the passes rewrite

# Ops that move or copy elements without mixing channels of the last axis's content.
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Expand", "Unsqueeze", "Squeeze", "Identity", "Cast"})


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value`` as NumPy, else ``None``.

    Initializers, ``Constant`` outputs, ``DequantizeLinear`` of constant codes (a
    quantized weight reads as its float value, so analysis works before and after
    quantization), and ``Add``/``Sub``/``Mul`` of two constants of one type, which an exporter
    without constant folding leaves in the graph (Gemma's norm gain ``1 + w``). The array may be
    a read-only view of a memory-mapped file: passes make new arrays, never write into these.
    """
    if value is None:
        return None
    if producer_op(value) == "DequantizeLinear":
        return dequantized_constant(value.producer())
    if producer_op(value) in _CONSTANT_ARITHMETIC:
        node = value.producer()
        left, right = const_array(node.inputs[0]), const_array(node.inputs[1])
        if left is None or right is None or left.dtype != right.dtype:
            return None
        return _CONSTANT_ARITHMETIC[node.op_type](left, right)
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


_CONSTANT_ARITHMETIC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}  # same-type operands: ONNX's result


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


def transposed_constant(value: ir.Value | None) -> ir.Value | None:
    """``W`` when ``value`` is ``Transpose(W, perm=[1, 0])`` of a constant 2-D ``W``, else None."""
    node = value.producer() if value is not None else None
    if (node is None or node.op_type != "Transpose" or not is_const(node.inputs[0])
            or tuple(node.attributes.get_ints("perm", (1, 0))) != (1, 0)):
        return None
    return node.inputs[0]


def producer_op(value: ir.Value) -> str | None:
    """The op type of the node producing ``value`` (``None`` for graph inputs and initializers)."""
    node = value.producer()
    return None if node is None else node.op_type


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
    (uniquely) after ``name`` (in a scratch file during a compile: :mod:`oqcompile.scratch`)."""
    name = unique_name(graph, name)
    value = ir.Value(name=name, const_value=scratch.new_tensor(name, array, dtype))
    value.shape = ir.Shape(np.shape(array))
    value.dtype = value.const_value.dtype
    graph.register_initializer(value)
    return value


def replace_input(node: ir.Node, index: int, value: ir.Value | None) -> None:
    """Plug ``value`` into ``node.inputs[index]`` and remove what it replaces once nothing reads it.

    Passes rewrite every weight; removing the old initializer at once (and whatever only fed
    it, such as a weight's ``Transpose``) keeps one copy of each weight in memory, not two
    until the pass ends.
    """
    replaced = node.inputs[index]
    node.replace_input_with(index, value)
    remove_if_unused(replaced)


def remove_if_unused(value: ir.Value | None) -> None:
    """Remove the initializer or node behind ``value`` (and what only fed it) if nothing reads it."""
    if value is None or value.uses() or value.is_graph_input() or value.is_graph_output():
        return
    if value.is_initializer():
        value.graph.initializers.pop(value.name)  # an external tensor's mapping goes with its last reader
        scratch.discard(value.const_value)
        return
    node = value.producer()
    if node is not None and not any(output.uses() or output.is_graph_output() for output in node.outputs):
        inputs = list(node.inputs)
        node.graph.remove(node, safe=True)
        for input_value in inputs:
            remove_if_unused(input_value)


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


class NodeMetadata:
    """A record that one pass leaves on nodes for later passes (and Netron shows).

    Subclasses are frozen dataclasses with a class attribute ``KEY``: the first field is stored
    in the node's ``metadata_props`` as ``oq.<KEY>``, every other one as ``oq.<KEY>_<field>``
    (``None`` fields are left out); numbers and strings as text, booleans as ``1``/``0``.
    :meth:`read` gives the record back with its field types.
    """

    KEY: ClassVar[str] = ""

    def write(self, node: ir.Node) -> None:
        for key, field in self._keys():
            value = getattr(self, field.name)
            if value is not None:
                node.metadata_props[key] = str(int(value)) if isinstance(value, bool) else str(value)

    @classmethod
    def read(cls, node: ir.Node) -> "NodeMetadata | None":
        """The record on ``node``, or ``None`` if the node carries none."""
        entries = node.metadata_props
        if f"oq.{cls.KEY}" not in entries:
            return None
        values = {}
        for key, field in cls._keys():
            text = entries.get(key)
            kind = field.type if isinstance(field.type, str) else field.type.__name__
            values[field.name] = None if text is None else _PARSERS[kind.removesuffix(" | None")](text)
        return cls(**values)

    @classmethod
    def _keys(cls) -> list[tuple[str, dataclasses.Field]]:
        return [(f"oq.{cls.KEY}" if index == 0 else f"oq.{cls.KEY}_{field.name}", field)
                for index, field in enumerate(dataclasses.fields(cls))]


_PARSERS = {"str": str, "int": int, "float": float, "bool": lambda text: text == "1"}


def copy_type(source: ir.Value, target: ir.Value) -> None:
    """Give ``target`` the dtype and shape of ``source`` where those are known."""
    if source.type is not None:
        target.type = source.type
    if source.shape is not None:
        target.shape = source.shape
