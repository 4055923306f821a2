"""Local matchers: one linear, one norm, the parts of one attention, and the no-op nodes between them.

Everything that knows how an exporter spells a linear (``MatMul``, ``MatMul(x, Transpose(W))``,
``Gemm``, a trailing bias ``Add``), a norm (fused ``LayerNormalization``/``RMSNormalization``/
``SimplifiedLayerNormalization`` or the decomposed ``x * 1/sqrt(mean(x^2) + eps) [* g]``),
RoPE and the head split lives here; :mod:`oqcompile.structure.stream` walks the stream with
these, and passes see only the roles.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import onnx_ir as ir

from oqcompile import qdq
from oqcompile.graph import LAYOUT_OPS, const_array, is_const, producer_op, transposed_constant
from oqcompile.rotation import BlockRotationTag
from oqcompile.structure.roles import Linear, Norm, StructureError

__all__ = ["FUSED_ATTENTION", "SKIP_NORMS", "column_views", "const_ndim", "dynamic_matmul_hits", "feeds_softmax",
           "find_head_dim", "is_fused_attention", "is_scalar_const", "match_linear", "match_norm", "peel_consumers",
           "peel_index_reshapes", "peel_noop", "positional_gather", "rope_output"]


def peel_noop(value: ir.Value) -> ir.Value:
    """Step back through nodes that act on whole channel vectors without mixing channels.

    These are ``Identity``, float-to-float ``Cast`` and ``CastLike`` (exporters add them freely;
    torch's ``type_as`` is a ``CastLike``), a ``Slice``
    over leading axes only (HF's ``logits_to_keep`` slice), a ``Reshape`` that only merges or
    splits leading axes (OPT flattens tokens to 2-D around its MLP), and an activation
    quantize-dequantize (``QuantizeLinear → [Clip] → DequantizeLinear``, see
    :mod:`oqcompile.qdq`). Channel rotations and scalings commute with the first four, and
    the last is an elementwise approximation of its input, so structure analysis sees the
    same transformer before and after quantization. It also steps back through a DuQuant
    block transform (:func:`oqcompile.rotation.insert_block_rotation`), whose inverse the
    reading linear's weight holds.
    """
    while (node := value.producer()) is not None:
        if BlockRotationTag.read(node) is not None:
            value = next(i for i in node.inputs if not is_const(i))  # the data, beside constant factors and shapes
        elif (node.op_type == "Identity"
                or (node.op_type == "Cast" and node.attributes.get_int("to") in _FLOAT_TYPES
                    and (node.inputs[0].dtype is None or node.inputs[0].dtype.value in _FLOAT_TYPES))
                or (node.op_type == "CastLike" and _float_to_float(node.inputs[0], node.inputs[1]))
                or (node.op_type == "Slice" and _slices_leading_axes_only(node))
                or (node.op_type == "Reshape" and _same_static_last_dim(node))):
            value = node.inputs[0]
        elif node.op_type == "DequantizeLinear" and (source := qdq.quantized_input(node)) is not None:
            value = source
        else:
            return value
    return value


def peel_consumers(value: ir.Value) -> list[ir.Node]:
    """Consumers of ``value``, looking through the nodes :func:`peel_noop` looks through
    (a quantize-dequantize counts as its ``DequantizeLinear``'s consumers)."""
    result = []
    for node in value.consumers():
        if node.op_type in ("Identity", "Cast", "CastLike", "Slice", "Reshape") and peel_noop(node.outputs[0]) is value:
            result += peel_consumers(node.outputs[0])
        elif node.op_type == "QuantizeLinear":
            for dequantize in qdq.dequantizers(node):
                result += peel_consumers(dequantize.outputs[0])
        elif not qdq.computes_scale(node):
            result.append(node)
    return result


def _float_to_float(value: ir.Value, like: ir.Value) -> bool:
    return (value.dtype is not None and like.dtype is not None
            and value.dtype.value in _FLOAT_TYPES and like.dtype.value in _FLOAT_TYPES)


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


def match_linear(node: ir.Node) -> Linear | None:
    """``node`` seen as a linear layer (MatMul/Gemm with a constant 2-D weight), else ``None``."""
    if node.op_type == "MatMul" and node.domain == "":
        weight_input = node.inputs[1]
        if is_const(node.inputs[0]) or weight_input is None:
            return None
        if _is_stored_weight(weight_input):
            slot, transposed = (node, 1), False
        elif transposed_constant(weight_input) is not None:
            slot, transposed = (weight_input.producer(), 0), True
        else:
            return None
        if const_ndim(slot[0].inputs[slot[1]]) != 2:
            return None
        linear = Linear("", node, node.inputs[0], node.outputs[0], slot, transposed)
    elif node.op_type == "Gemm" and node.domain == "":
        if (node.attributes.get_int("transA", 0) or node.attributes.get_float("alpha", 1.0) != 1.0
                or node.attributes.get_float("beta", 1.0) != 1.0 or not _is_stored_weight(node.inputs[1])):
            return None
        linear = Linear("", node, node.inputs[0], node.outputs[0], (node, 1),
                        bool(node.attributes.get_int("transB", 0)))
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            linear.bias_slot = (node, 2)
            return linear
    else:
        return None
    users = linear.output.consumers()
    if len(users) == 1 and users[0].op_type == "Add" and not linear.output.is_graph_output():
        add = users[0]
        index = 1 if add.inputs[0] is linear.output else 0
        bias = const_array(add.inputs[index])
        if bias is not None and bias.ndim == 1 and bias.shape[0] == linear.out_features:
            linear.output, linear.bias_slot = add.outputs[0], (add, index)
    return linear


def _is_stored_weight(value: ir.Value) -> bool:
    """An initializer, a ``Constant``, or ``DequantizeLinear`` of constant integer codes."""
    return (value.const_value is not None or producer_op(value) == "Constant"
            or (producer_op(value) == "DequantizeLinear" and is_const(value)))


# ORT's norms with the residual add fused in (com.microsoft), and the norm each one computes.
SKIP_NORMS = {"SkipSimplifiedLayerNormalization": "SimplifiedLayerNormalization",
              "SkipLayerNormalization": "LayerNormalization"}


def match_norm(node: ir.Node) -> Norm | None:
    op = node.op_type
    if op == "LayerNormalization" or op in ("RMSNormalization", "SimplifiedLayerNormalization"):
        if node.attributes.get_int("axis", -1) != -1:
            return None
        bias_slot = (node, 2) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        output = node.outputs[0]
        if bias_slot is None:
            output, bias_slot = _trailing_bias(output)
        return Norm("", "layer" if op == "LayerNormalization" else "rms", peel_noop(node.inputs[0]),
                    output, (node, 1), bias_slot, True, node.attributes.get_float("epsilon", 1e-5))
    if op != "ReduceMean":
        return None
    return _match_decomposed_rms(node)


def _match_decomposed_rms(mean: ir.Node) -> Norm | None:
    """``x * 1/sqrt(mean(x^2) + eps) [* g]`` anchored at its ReduceMean."""
    square = mean.inputs[0].producer()
    if square is None:
        return None
    if square.op_type == "Pow" and _scalar_value(square.inputs[1]) == 2.0:
        x = peel_noop(square.inputs[0])
    elif square.op_type == "Mul" and square.inputs[0] is square.inputs[1]:
        x = peel_noop(square.inputs[0])
    else:
        return None
    add = _only_consumer(mean.outputs[0], "Add")
    if add is None:
        return None
    epsilon = _scalar_value(add.inputs[1] if add.inputs[0] is mean.outputs[0] else add.inputs[0])
    sqrt = _only_consumer(add.outputs[0], "Sqrt")
    if epsilon is None or sqrt is None:
        return None
    normalized = None
    for node in sqrt.outputs[0].consumers():
        if node.op_type == "Div" and node.inputs[1] is sqrt.outputs[0] and peel_noop(node.inputs[0]) is x:
            normalized = node.outputs[0]
        elif node.op_type in ("Reciprocal", "Div"):
            if node.op_type == "Div" and _scalar_value(node.inputs[0]) != 1.0:
                continue
            for mul in node.outputs[0].consumers():
                if mul.op_type == "Mul" and any(peel_noop(i) is x for i in mul.inputs):
                    normalized = mul.outputs[0]
    if normalized is None:
        return None
    output, gain_slot = normalized, None
    while (cast := _only_consumer(output, "Cast")) is not None:
        output = cast.outputs[0]
    mul = _only_consumer(output, "Mul")
    if mul is not None:
        index = 0 if mul.inputs[1] is output else 1
        gain = const_array(mul.inputs[index])
        if gain is not None and gain.ndim == 1:
            output, gain_slot = mul.outputs[0], (mul, index)
    if gain_slot is None:
        output = normalized
    output, bias_slot = _trailing_bias(output)
    return Norm("", "rms", x, output, gain_slot, bias_slot, False, float(epsilon))


def _trailing_bias(output: ir.Value) -> tuple[ir.Value, tuple[ir.Node, int] | None]:
    """A norm output followed by ``Add`` of a constant vector (e.g. OutlierTune's shift) has that bias."""
    add = _only_consumer(output, "Add")
    if add is not None and len(output.consumers()) == 1:
        index = 1 if add.inputs[0] is output else 0
        bias = const_array(add.inputs[index])
        width = output.shape[-1] if output.shape is not None and len(output.shape) else None
        if bias is not None and bias.ndim == 1 and (not isinstance(width, int) or width == bias.shape[0]):
            return add.outputs[0], (add, index)
    return output, None


def column_views(linear: Linear) -> list[Linear] | None:
    """The column ranges of ``linear``'s output cut out by ``Slice``/``Split``/``SplitToSequence`` on its last
    axis (a packed QKV or gate/up projection), in column order; None unless every reader of the
    output is such a cut and together they cover all columns."""
    width = linear.out_features
    cuts = []
    for node in peel_consumers(linear.output):
        if node.op_type in ("Shape", "Size"):
            continue
        ranges = _last_axis_cuts(node, width)
        if ranges is None:
            return None
        cuts += ranges
    cuts.sort(key=lambda cut: cut[1])
    if len(cuts) < 2 or [cut[1] for cut in cuts] != [0] + [cut[2] for cut in cuts[:-1]] or cuts[-1][2] != width:
        return None
    return [linear.column_range("", start, stop, output) for output, start, stop in cuts]


def _last_axis_cuts(node: ir.Node, width: int) -> list[tuple[ir.Value, int, int]] | None:
    """``(output, start, stop)`` of a Slice (unit steps), Split or SplitToSequence + SequenceAt along
    the last axis of a rank-known input, else None."""
    rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else None
    if rank is None:
        return None
    if node.op_type == "Slice":
        starts, ends, axes, steps = [static_ints(v) for v in list(node.inputs[1:]) + [None] * 4][:4]
        if starts is None or ends is None or starts.size != 1 or (axes is not None and axes.size != 1):
            return None
        axis = int(axes.reshape(-1)[0]) % rank if axes is not None else 0
        if axis != rank - 1 or (steps is not None and int(steps.reshape(-1)[0]) != 1):
            return None
        start, stop = (min(max(int(b) + (width if int(b) < 0 else 0), 0), width)
                       for b in (starts.reshape(-1)[0], ends.reshape(-1)[0]))
        return [(node.outputs[0], start, stop)]
    if node.op_type not in ("Split", "SplitToSequence") or node.attributes.get_int("axis", 0) % rank != rank - 1:
        return None
    if node.op_type == "Split":
        sizes = static_ints(node.inputs[1]) if len(node.inputs) > 1 else None
        if sizes is None:
            if width % len(node.outputs):
                return None
            sizes = np.full(len(node.outputs), width // len(node.outputs))
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        return [(output, int(bounds[i]), int(bounds[i + 1])) for i, output in enumerate(node.outputs)]
    # SplitToSequence (torch's chunk without the optimizer): pieces read back by SequenceAt; a scalar
    # split is the size of every piece
    sizes = (const_array(peel_index_reshapes(node.inputs[1])) if len(node.inputs) > 1 and node.inputs[1] is not None
             else None)
    if sizes is None or sizes.ndim > 1:
        return None
    sizes = np.full(-(-width // int(sizes)), int(sizes)) if sizes.ndim == 0 else sizes
    bounds = np.minimum(np.concatenate([[0], np.cumsum(sizes)]), width)
    cuts = []
    for reader in node.outputs[0].consumers():
        position = const_array(reader.inputs[1]) if reader.op_type == "SequenceAt" else None
        if position is None:
            return None
        index = int(position) % len(sizes)
        cuts.append((reader.outputs[0], int(bounds[index]), int(bounds[index + 1])))
    return cuts


# -- attention details --------------------------------------------------------------------


# Attention as one op, q/k/v its inputs 0/1/2: ORT's contrib ops and the ONNX Attention op (opset 23).
FUSED_ATTENTION = {("com.microsoft", "GroupQueryAttention"), ("com.microsoft", "MultiHeadAttention"),
                   ("", "Attention")}


def is_fused_attention(node: ir.Node) -> bool:
    return (node.domain, node.op_type) in FUSED_ATTENTION


def dynamic_matmul_hits(start: ir.Value, writer: ir.Node) -> set[tuple[ir.Node, int]]:
    """The first MatMuls between two activations, or attention ops (:data:`FUSED_ATTENTION`),
    reached from ``start`` (node, input slot)."""
    hits, seen, queue = set(), set(), deque([start])
    while queue:
        value = queue.popleft()
        for node in value.consumers():
            if node is writer:
                continue
            if is_fused_attention(node) or (node.op_type in ("MatMul", "FusedMatMul")  # ORT folds kᵀ into the latter
                                            and not is_const(node.inputs[0]) and not is_const(node.inputs[1])):
                hits.add((node, list(node.inputs).index(value)))  # by every input it is reached at
                continue
            if node.op_type in ("Shape", "Size") or (node.op_type == "CastLike" and node.inputs[0] is not value):
                continue  # they read only the shape or the type of ``value``
            if id(node) in seen:
                continue
            seen.add(id(node))
            queue.extend(node.outputs)
        if len(seen) > 500:
            break
    return hits


def feeds_softmax(matmul: ir.Node) -> bool:
    queue, steps = deque([matmul.outputs[0]]), 0
    while queue and steps < 20:
        steps += 1
        for node in queue.popleft().consumers():
            if node.op_type == "Softmax":
                return True
            if node.op_type in ("Mul", "Div", "Add", "Where", "Cast", "Sub", "Tanh", "Identity"):
                queue.extend(node.outputs)
    return False


def find_head_dim(scores: ir.Node, q: Linear) -> int:
    """Head size: the score MatMul's static last dim, else the target of the head-splitting Reshape."""
    shape = scores.inputs[0].shape
    if shape is not None and len(shape) >= 1 and isinstance(shape[-1], int):
        return shape[-1]
    value = q.output
    for _ in range(5):
        users = [n for n in value.consumers() if n.op_type in LAYOUT_OPS or _is_scalar_scaling(n)]
        if not users:
            break
        node = users[0]
        if node.op_type == "Reshape":
            target = node.inputs[1]
            last = const_array(target)
            if last is None and producer_op(target) == "Concat":
                last = const_array(target.producer().inputs[-1])
            if last is not None and last.reshape(-1)[-1] > 0:
                return int(last.reshape(-1)[-1])
        shape = node.outputs[0].shape
        if shape is not None and len(shape) == 4 and isinstance(shape[-1], int):
            return shape[-1]
        value = node.outputs[0]
    raise StructureError(f"cannot find the head size of the attention fed by {q.node.name}")


def rope_output(projection: Linear) -> ir.Value | None:
    """The RoPE ``Add(x*cos, rotate_half(x)*sin)``, or a 4-D ``RotaryEmbedding`` op, fed by a q or k
    projection (after its head split); with partial rotary, the ``Concat`` that joins the rotated
    channels to the rest of the head."""
    value = projection.output
    for _ in range(8):
        users = _readers(value)
        if (rope := _rope(value, users)) is not None:
            return rope
        if (joined := _partial_rotary(value, users)) is not None:
            return joined
        layout = [n for n in users if n.op_type in LAYOUT_OPS]
        if len(layout) != 1:
            return None
        value = layout[0].outputs[0]
    return None


def _readers(value: ir.Value) -> list[ir.Node]:
    return [n for n in value.consumers() if n.op_type not in ("Shape", "Size")]


def _rope(value: ir.Value, users: list[ir.Node]) -> ir.Value | None:
    """RoPE applied to ``value`` by one of its readers ``users``: a ``RotaryEmbedding`` op (ONNX opset
    23 or ORT's, on [batch, heads, sequence, head size]) or ``Add(x*cos, rotate_half(x)*sin)``."""
    for rotary in users:
        if (rotary.op_type == "RotaryEmbedding" and rotary.inputs[0] is value and value.shape is not None
                and len(value.shape) == 4):
            return rotary.outputs[0]
    for mul in users:
        if mul.op_type != "Mul":
            continue
        for add in mul.outputs[0].consumers():
            if add.op_type == "Add" and all(producer_op(i) == "Mul" for i in add.inputs):
                return add.outputs[0]
    return None


def _partial_rotary(value: ir.Value, users: list[ir.Node]) -> ir.Value | None:
    """``Concat(rope(x[..., :r]), x[..., r:])`` on the last axis of a head-split x (HF's partial
    rotary, Phi-3 as TorchScript writes it even at r = head size): the Concat's output."""
    width = value.shape[-1] if value.shape is not None and len(value.shape) else None
    if not isinstance(width, int) or len(users) != 2 or any(n.op_type != "Slice" for n in users):
        return None
    cuts = [_last_axis_cuts(n, width) for n in users]
    if any(c is None for c in cuts):
        return None
    (rotated, start, r), (kept, r2, stop) = sorted((c[0] for c in cuts), key=lambda cut: cut[1])
    rope = _rope(rotated, _readers(rotated)) if (start, r2, stop) == (0, r, width) else None
    if rope is None or len(rope.consumers()) != 1:
        return None
    concat = rope.consumers()[0]
    rank = len(value.shape)
    if (concat.op_type != "Concat" or list(concat.inputs) != [rope, kept]
            or concat.attributes.get_int("axis", 0) % rank != rank - 1):
        return None
    return concat.outputs[0]


# -- small helpers --------------------------------------------------------------------------


def peel_index_reshapes(value: ir.Value) -> ir.Value:
    while (node := value.producer()) is not None and node.op_type in (
            "Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze"):
        value = node.inputs[0]
    return value


def static_ints(value: ir.Value | None) -> np.ndarray | None:
    """The integers behind ``value`` where constants and static dims decide them, else None.

    Exporters compute slice bounds as integer arithmetic on shapes (TorchScript's ``chunk`` and
    Phi-3's ``x[..., :cos.shape[-1]]``: ``Shape → Gather → Add/Div/Mul → Unsqueeze``); a bound is
    static when every dim it reads is. Reshapes and (un)squeezes keep the values in order, so the
    result is given flat.
    """
    if value is None:
        return None
    array = const_array(value)
    if array is not None:
        return array.reshape(-1) if array.dtype.kind in "iu" else None
    node = value.producer()
    if node is None:
        return None
    if node.op_type in ("Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze"):
        return static_ints(node.inputs[0])
    if node.op_type == "Gather" and producer_op(node.inputs[0]) == "Shape":
        dims = _shape_dims(node.inputs[0].producer())
        index = static_ints(node.inputs[1])
        if dims is None or index is None or not all(-len(dims) <= i < len(dims) for i in index):
            return None
        picked = [dims[i] for i in index]
        return np.array(picked, np.int64) if all(isinstance(d, int) for d in picked) else None
    if node.op_type == "Shape":
        dims = _shape_dims(node)
        return np.array(dims, np.int64) if dims is not None and all(isinstance(d, int) for d in dims) else None
    if node.op_type == "Concat":
        parts = [static_ints(v) for v in node.inputs]
        return None if any(p is None for p in parts) else np.concatenate(parts)
    operations = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": lambda a, b: np.trunc(a / b)}
    if node.op_type in operations:
        a, b = static_ints(node.inputs[0]), static_ints(node.inputs[1])
        if a is None or b is None or (a.size != b.size and 1 not in (a.size, b.size)):
            return None
        if node.op_type == "Div" and not b.all():
            return None
        return operations[node.op_type](a, b).astype(np.int64)
    return None


def _shape_dims(shape_node: ir.Node) -> list[int | None] | None:
    """The dims a ``Shape`` node returns (its ``start``/``end`` applied), ints where static."""
    shape = shape_node.inputs[0].shape
    if shape is None:
        return None
    dims = [d if isinstance(d, int) else None for d in shape]
    start, end = shape_node.attributes.get_int("start", 0), shape_node.attributes.get_int("end", len(dims))
    return dims[start:end]


def positional_gather(value: ir.Value) -> ir.Node | None:
    value = peel_noop(value)
    node = value.producer()
    if node is not None and node.op_type == "Gather" and const_ndim(node.inputs[0]) == 2:
        return node
    return None


def const_ndim(value: ir.Value | None) -> int | None:
    if value is None:
        return None
    if value.const_value is not None:
        return len(value.const_value.shape)
    if producer_op(value) == "DequantizeLinear" and value.shape is not None and is_const(value):
        return len(value.shape)  # without dequantizing a quantized weight
    array = const_array(value)
    return None if array is None else array.ndim


def _scalar_value(value: ir.Value | None) -> float | None:
    array = const_array(value)
    if array is None or array.size != 1:
        return None
    return float(array.reshape(()))


def is_scalar_const(value: ir.Value | None) -> bool:
    return _scalar_value(value) is not None


def _is_scalar_scaling(node: ir.Node) -> bool:
    """``x * c`` or ``x / c`` with a constant scalar ``c`` (OPT scales q before the head split)."""
    return node.op_type in ("Mul", "Div") and is_scalar_const(node.inputs[1])


def _only_consumer(value: ir.Value, op_type: str) -> ir.Node | None:
    users = [n for n in value.consumers() if n.op_type == op_type]
    return users[0] if len(users) == 1 else None
