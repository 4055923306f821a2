"""An ONNX graph run by PyTorch: the differentiable forward that learned passes train through.

:class:`TorchGraph` evaluates the nodes of an ``onnx_ir`` graph in order with PyTorch
operations, float tensors in float32 (an fp16 graph's casts to float16 stay float32), so
autograd follows every value. It reads the graph the exporter wrote, whatever its spelling,
instead of re-implementing a model family: what the graph computes is what is trained.
``linears`` maps a MatMul/Gemm node to a function ``(x, w) -> y`` that replaces the product
``x @ w`` (``w`` as ``[in, out]``; a Gemm's bias is still added by the graph semantics), the
hook a pass uses to rotate and fake-quantize each linear. Only the operators exporters of
decoder LLMs emit are covered; any other op is refused with its name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir
import torch

from oqcompile.errors import OQError

__all__ = ["TorchGraph"]

LinearHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}
_TORCH_TYPES = {ir.DataType.INT64: torch.int64, ir.DataType.INT32: torch.int32, ir.DataType.BOOL: torch.bool,
                ir.DataType.INT8: torch.int8, ir.DataType.UINT8: torch.uint8}


def _to_torch(array: np.ndarray) -> torch.Tensor:
    """A tensor of its own (initializers may be read-only memory maps), floats as float32."""
    return torch.from_numpy(np.array(array, np.float32 if array.dtype.kind == "f" else array.dtype))


def _ints(tensor: torch.Tensor) -> list[int]:
    return [int(v) for v in tensor.reshape(-1).tolist()]


def _attribute(attributes, name: str, default):
    attribute = attributes.get(name)
    return default if attribute is None else attribute.value


def _reduce_axes(node: ir.Node, inputs: list) -> list[int] | None:
    if len(inputs) > 1 and inputs[1] is not None:
        return _ints(inputs[1])
    axes = _attribute(node.attributes, "axes", None)
    return None if axes is None else list(axes)


def _reduce_mean(node, x, *rest):
    axes = _reduce_axes(node, [x, *rest])
    keep = bool(_attribute(node.attributes, "keepdims", 1))
    return x.mean() if not axes else x.mean(dim=axes, keepdim=keep)


def _slice(node, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = list(range(len(starts))) if axes is None else _ints(axes)
    steps = [1] * len(starts) if steps is None else _ints(steps)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step != 1:
            raise OQError(f"{node.name}: Slice with step {step} is not supported in the PyTorch forward")
        size = x.shape[axis]
        start = max(0, min(size, start + size if start < 0 else start))
        end = max(0, min(size, end + size if end < 0 else end))
        index[axis] = slice(start, end)
    return x[tuple(index)]


def _reshape(node, x, shape):
    target = _ints(shape)
    if not _attribute(node.attributes, "allowzero", 0):
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return x.reshape(target)


def _unsqueeze(node, x, axes=None):
    axes = _ints(axes) if axes is not None else list(node.attributes["axes"].value)
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def _squeeze(node, x, axes=None):
    if axes is None:
        return x.squeeze()
    for axis in sorted((a % x.dim() for a in _ints(axes)), reverse=True):
        x = x.squeeze(axis)
    return x


def _expand(node, x, shape):
    target = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape)))
    return x.expand(target)


def _flatten(node, x):
    axis = _attribute(node.attributes, "axis", 1)
    axis = axis + x.dim() if axis < 0 else axis  # in [0, rank]
    return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


def _cast(node, x):
    to = ir.DataType(node.attributes["to"].value)
    if to in _FLOAT_TYPES:
        return x.float()
    if to not in _TORCH_TYPES:
        raise OQError(f"{node.name}: Cast to {to.name} is not supported in the PyTorch forward")
    return x.to(_TORCH_TYPES[to])


def _gemm(node, a, b, c=None):
    if _attribute(node.attributes, "transA", 0):
        a = a.transpose(-1, -2)
    if _attribute(node.attributes, "transB", 0):
        b = b.transpose(-1, -2)
    y = _attribute(node.attributes, "alpha", 1.0) * (a @ b)
    return y if c is None else y + _attribute(node.attributes, "beta", 1.0) * c


def _range(node, start, limit, delta):
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _concat(node, *xs):
    return torch.cat(list(xs), dim=node.attributes["axis"].value)


def _split(node, x, split=None):
    axis = _attribute(node.attributes, "axis", 0)
    if split is None:
        count = len(node.outputs)
        return torch.chunk(x, count, dim=axis)
    return torch.split(x, _ints(split), dim=axis)


def _softmax(node, x):
    return torch.softmax(x, dim=_attribute(node.attributes, "axis", -1))


def _transpose(node, x):
    perm = _attribute(node.attributes, "perm", None)
    return x.permute(*(perm if perm is not None else range(x.dim() - 1, -1, -1)))


def _gather(node, data, indices):
    axis = _attribute(node.attributes, "axis", 0) % data.dim()
    indices = indices.long()
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    flat = torch.index_select(data, axis, indices.reshape(-1))
    return flat.reshape((*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]))


def _gather_nd(node, data, indices):
    if _attribute(node.attributes, "batch_dims", 0):
        raise OQError(f"{node.name}: GatherND with batch_dims is not supported in the PyTorch forward")
    depth = indices.shape[-1]
    index = tuple(indices[..., i].long() for i in range(depth))
    return data[index]


def _cumsum(node, x, axis):
    axis = int(axis.item())
    if _attribute(node.attributes, "reverse", 0):
        x = x.flip(axis)
    result = torch.cumsum(x, dim=axis)
    if _attribute(node.attributes, "exclusive", 0):
        result = result - x
    return result.flip(axis) if _attribute(node.attributes, "reverse", 0) else result


def _layer_norm(node, x, scale, bias=None):
    axis = _attribute(node.attributes, "axis", -1) % x.dim()
    epsilon = _attribute(node.attributes, "epsilon", 1e-5)
    return torch.nn.functional.layer_norm(x, tuple(x.shape[axis:]), scale, bias, epsilon)


def _gelu(node, x):
    return torch.nn.functional.gelu(x, approximate=_attribute(node.attributes, "approximate", "none"))


def _constant(node):
    return _to_torch(node.attributes["value"].value.numpy())


def _shape(node, x):
    shape = torch.tensor(list(x.shape), dtype=torch.int64)
    start, end = _attribute(node.attributes, "start", 0), _attribute(node.attributes, "end", None)
    return shape[start:end]


def _constant_of_shape(node, shape):
    value = node.attributes.get("value")
    fill = _to_torch(value.value.numpy()).reshape(()) if value is not None else torch.tensor(0.0)
    return torch.full(_ints(shape), fill.item(), dtype=fill.dtype)


def _trilu(node, x, k=None):
    offset = 0 if k is None else int(k.item())
    return torch.triu(x, offset) if _attribute(node.attributes, "upper", 1) else torch.tril(x, offset)


def _div(node, a, b):
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates


_ELEMENTWISE: dict[str, Callable] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow, "Neg": torch.neg, "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal, "Exp": torch.exp, "Tanh": torch.tanh, "Cos": torch.cos, "Sin": torch.sin,
    "Sigmoid": torch.sigmoid, "Erf": torch.erf, "Abs": torch.abs, "Relu": torch.relu, "IsNaN": torch.isnan,
    "Not": torch.logical_not, "And": torch.logical_and, "Or": torch.logical_or, "Equal": torch.eq, "Less": torch.lt,
    "LessOrEqual": torch.le, "Greater": torch.gt, "GreaterOrEqual": torch.ge, "Where": torch.where,
    "MatMul": torch.matmul, "Identity": lambda x: x,
}


def _of_inputs(function: Callable) -> Callable:
    """An entry of _OPS for a PyTorch function of the node's inputs alone."""
    return lambda node, *inputs: function(*inputs)


_OPS: dict[str, Callable] = {
    **{op: _of_inputs(function) for op, function in _ELEMENTWISE.items()},
    "Div": _div, "Max": lambda node, *xs: torch.stack(torch.broadcast_tensors(*xs)).amax(0),
    "Min": lambda node, *xs: torch.stack(torch.broadcast_tensors(*xs)).amin(0), "Gemm": _gemm, "Cast": _cast,
    "Flatten": _flatten, "Shape": _shape, "Reshape": _reshape, "Transpose": _transpose, "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze, "Expand": _expand, "Concat": _concat, "Slice": _slice, "Split": _split, "Gather": _gather,
    "GatherND": _gather_nd, "Range": _range, "Softmax": _softmax, "ReduceMean": _reduce_mean, "Constant": _constant,
    "ConstantOfShape": _constant_of_shape, "Trilu": _trilu, "CumSum": _cumsum, "LayerNormalization": _layer_norm,
    "Gelu": _gelu,
}


class TorchGraph:
    """``graph`` evaluated by PyTorch (see module doc); initializers are read once, as float32."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        unsupported = sorted({node.op_type for node in graph if node.domain not in ("", "ai.onnx")
                              or node.op_type not in _OPS})
        if unsupported:
            raise OQError(f"the PyTorch forward does not implement {', '.join(unsupported)}: learned rotations "
                          "need a graph of the standard ops exporters write for decoder LLMs")
        self.constants = {value: _to_torch(value.const_value.numpy())
                          for value in graph.initializers.values() if value.const_value is not None}

    def run(self, feeds: dict[str, torch.Tensor], linears: dict[ir.Node, LinearHook] | None = None
            ) -> list[torch.Tensor]:
        """The graph outputs for ``feeds`` (by input name), linear nodes through their hooks."""
        linears = linears or {}
        values: dict[ir.Value, torch.Tensor] = dict(self.constants)
        for value in self.graph.inputs:
            values[value] = feeds[value.name]
        last_use = {}
        for position, node in enumerate(self.graph):
            for value in node.inputs:
                if value is not None:
                    last_use[value] = position
        outputs = set(self.graph.outputs)
        for position, node in enumerate(self.graph):
            inputs = [None if value is None or value.name == "" else values[value] for value in node.inputs]
            hook = linears.get(node)
            if hook is not None:
                weight = inputs[1].transpose(-1, -2) if _attribute(node.attributes, "transB", 0) else inputs[1]
                y = hook(inputs[0], weight)
                if node.op_type == "Gemm" and len(inputs) > 2 and inputs[2] is not None:
                    y = y + _attribute(node.attributes, "beta", 1.0) * inputs[2]
                results = [y]
            else:
                result = _OPS[node.op_type](node, *inputs)
                results = list(result) if isinstance(result, (tuple, list)) else [result]
            for value, result in zip(node.outputs, results):
                values[value] = result
            for value in node.inputs:  # free what no later node reads
                if value is not None and last_use.get(value) == position and value not in outputs \
                        and value not in self.constants:
                    values.pop(value, None)
        return [values[value] for value in self.graph.outputs]
