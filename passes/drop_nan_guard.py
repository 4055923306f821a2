"""Drop the exporter's NaN guard after an attention softmax whose mask is finite.

PyTorch's decomposition of scaled dot-product attention ends in a guard for rows where every
key is masked:

    p = Softmax(s + m),   out = Where(IsNaN(p), 0, p)

With a boolean mask turned into ``m ∈ {0, −∞}``, such a row is all −∞ and its softmax is NaN,
which the guard zeroes. ``transformers`` builds its additive mask with the dtype's lowest
finite value instead, ``m ∈ {0, μ}`` (``μ = −3.4·10³⁸`` in float32), written as
``m = Where(c, 0, μ)``. Then every entry of ``s + m`` is finite whenever the scores are
(``s > −ulp(μ)/2 ≈ −10³¹``, far beyond any attention score), so the row maximum ``x_max`` is
finite, each ``exp(x − x_max)`` lies in ``[0, 1]`` and their sum is at least 1: ``p`` has no
NaN and the guard returns ``p`` unchanged, also for fully masked rows (left padding), which
get uniform weights, as in PyTorch. This pass feeds ``p`` to the guard's readers; the
``IsNaN`` and the ``Where`` (two passes over a ``[batch, heads, queries, keys]`` tensor per
layer) go. The logits are bit for bit the same, padded positions included.

Guards whose mask is not such a ``Where`` of ``0`` and ``μ`` are left alone.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from oqcompile.graph import FLOAT_TYPES
from oqcompile.passes.base import TransformerPass

__all__ = ["DropNanGuard"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DropNanGuard(TransformerPass):
    """Remove ``Where(IsNaN(Softmax(s + finite mask)), 0, ·)`` (see module doc)."""

    name = "drop_nan_guard"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        dropped = 0
        softmax_is_last_axis_by_default = model.opset_imports.get("", 1) >= 13
        for node in list(model.graph):
            probabilities = _guarded_softmax(node, softmax_is_last_axis_by_default)
            if probabilities is not None:
                ir.convenience.replace_all_uses_with(node.outputs[0], probabilities)
                dropped += 1
        logger.info("dropped %d NaN guards after finitely masked softmaxes", dropped)
        return ir.passes.PassResult(model, modified=bool(dropped))


def _is_scalar(value: ir.Value | None, number: float) -> bool:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return tensor is not None and tensor.size == 1 and tensor.numpy().item() == number


def _guarded_softmax(guard: ir.Node, last_axis_by_default: bool) -> ir.Value | None:
    """``p`` if ``guard`` is ``Where(IsNaN(p), 0, p)`` with ``p = Softmax(s + Where(c, 0, μ))``
    over the last axis, else None."""
    if guard.op_type != "Where" or guard.domain != "" or any(value is None for value in guard.inputs):
        return None
    condition, zero, p = guard.inputs
    is_nan, softmax = condition.producer(), p.producer()
    if is_nan is None or is_nan.op_type != "IsNaN" or is_nan.inputs[0] is not p or not _is_scalar(zero, 0.0):
        return None
    if softmax is None or softmax.op_type != "Softmax" or p.dtype not in FLOAT_TYPES or p.shape is None:
        return None
    axis = softmax.attributes.get("axis")
    over_last_axis = axis.value in (-1, len(p.shape) - 1) if axis is not None else last_axis_by_default
    if not over_last_axis:
        return None
    add = softmax.inputs[0].producer()
    if add is None or add.op_type != "Add":
        return None
    lowest = np.finfo(p.dtype.numpy()).min
    for addend in add.inputs:
        mask = addend.producer()
        if (mask is not None and mask.op_type == "Where" and _is_scalar(mask.inputs[1], 0.0)
                and _is_scalar(mask.inputs[2], float(lowest))):
            return p
    return None
