"""Fuse attention, norms and rotary embeddings into ONNX Runtime's contrib ops.

The exporter writes attention and RMS norms as chains of elementwise ops; ONNX Runtime runs
them faster as single kernels. After oqcompile's own passes (and ``lower``), this pass hands
the graph to :func:`onnxscript.rewriter.ort_fusions.optimize_for_ort`, which matches:

- ``y = x / sqrt(mean(x²) + ε) ⊙ g`` → ``SimplifiedLayerNormalization(x, g)``, and with the
  residual ``Add`` ``r = a + b`` in front → ``SkipSimplifiedLayerNormalization(a, b, g)``,
  whose extra output is ``r`` (the residual stream runs on through it);
- scaled dot-product attention ``softmax(q kᵀ · s + bias) v`` per head, with the exporter's
  guard that zeroes rows where every key is masked → ``MultiHeadAttention(q, k, v, bias)``
  (the kernel gives such rows zero weights itself, so padded batches keep their logits);
- ``x ⊙ cos + rotate_half(x) ⊙ sin`` with a cos/sin cache → ``RotaryEmbedding``.

The library's attention rewrite hands ``MultiHeadAttention`` its keys and values as
``[batch, sequence, heads · head_size]``: ``Reshape(Transpose(k, perm=[0, 2, 1, 3]))`` of the
``[batch, heads, sequence, head_size]`` tensors the exporter has (the KV cache, with GQA's
repeated heads). The kernel takes that layout too, and transposes back itself, so this pass
then feeds it ``k`` and ``v`` as they are: the same numbers, two fewer copies of the whole
cache per layer and token.

``fuse_norms`` leaves norms without a gain, ``y = x / sqrt(mean(x²) + ε)``, which the
library's rule does not match: those get ``SimplifiedLayerNormalization(x, 1)`` first (the
unit gain changes nothing), so that the skip form and everything after apply to them too.

Every rewrite computes the same function up to float rounding; a quantized graph may then
flip an activation code where a value sat on a rounding boundary. The ops are ORT's
``com.microsoft`` contrib ops, so the pass never runs with ``--portable``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import ort_fusions, pattern

from oqcompile.graph import FLOAT_TYPES
from oqcompile.passes.base import TransformerPass

__all__ = ["FuseOrt"]

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class FuseOrt(TransformerPass):
    """Fuse attention, RMS norms and rotary embeddings into ORT contrib ops (see module doc)."""

    name = "fuse_ort"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        unit_gains = _UNIT_GAIN_NORMS.apply_to_model(model)
        _, counts = ort_fusions.optimize_for_ort(model)
        heads_first = sum(_feed_heads_first(node) for node in model.graph if _is_mha(node))
        fused = {name: count for name, count in counts.items() if count}
        logger.info("ORT fusions: %s (%d gain-free norms given a unit gain, %d attentions fed keys and values "
                    "heads first)", fused, unit_gains, heads_first)
        return ir.passes.PassResult(model, modified=bool(unit_gains or fused or heads_first))


def _is_mha(node: ir.Node) -> bool:
    return node.op_type == "MultiHeadAttention" and node.domain == "com.microsoft"


def _heads_first_source(value: ir.Value | None, num_heads: int) -> ir.Value | None:
    """``x`` if ``value = Reshape(Transpose(x, perm=[0, 2, 1, 3]), [0, 0, -1])`` with ``x`` of
    shape ``[batch, num_heads, sequence, head_size]``, else None."""
    reshape = value.producer() if value is not None else None
    if reshape is None or reshape.op_type != "Reshape" or reshape.domain != "":
        return None
    shape = ir.convenience.get_const_tensor(reshape.inputs[1]) if len(reshape.inputs) > 1 else None
    if shape is None or shape.numpy().tolist() != [0, 0, -1]:
        return None
    transpose = reshape.inputs[0].producer()
    if transpose is None or transpose.op_type != "Transpose" or transpose.domain != "":
        return None
    perm = transpose.attributes.get("perm")
    source = transpose.inputs[0]
    if perm is None or list(perm.value) != [0, 2, 1, 3] or source.shape is None or len(source.shape) != 4:
        return None
    return source if source.shape[1] == num_heads else None


def _feed_heads_first(node: ir.Node) -> bool:
    """Give a ``MultiHeadAttention`` without a past its key and value heads first (module doc)."""
    num_heads = node.attributes["num_heads"].value
    if len(node.inputs) > 6 and any(value is not None for value in node.inputs[6:]):
        return False  # with a past the kernel takes keys and values [batch, sequence, hidden] only
    key, value = (_heads_first_source(node.inputs[i], num_heads) for i in (1, 2))
    if key is None or value is None:
        return False
    node.replace_input_with(1, key)
    node.replace_input_with(2, value)
    return True


class _GainFreeRmsNorm(pattern.RewriteRuleClassBase):
    """``x / sqrt(mean(x²) + ε)`` read by anything but a gain ``Mul`` → ``SimplifiedLayerNormalization(x, 1)``.

    Exporters write it as ``x · Reciprocal(rms)``; ``fuse_norms`` (for LayerNorms it made
    mean-free) as ``x / rms``.
    """

    def __init__(self, name: str, divide: bool):
        super().__init__(name)
        self._divide = divide

    def pattern(self, op, x, epsilon):
        mean_square = op.ReduceMean(op.Pow(x, 2.0), [-1], keepdims=1)
        rms = op.Sqrt(op.Add(mean_square, epsilon))
        return op.Div(x, rms) if self._divide else op.Mul(x, op.Reciprocal(rms))

    def check(self, context, x, epsilon, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if x.dtype not in FLOAT_TYPES or x.shape is None or not isinstance(x.shape[-1], int):
            return result.fail("input is not float with a static last dimension", x)
        if epsilon.const_value is None or epsilon.const_value.numpy().size != 1:
            return result.fail("epsilon is not a constant scalar", epsilon)
        if any(user.op_type == "Mul" for user, _ in context.root.outputs[0].uses()):
            return result.fail("a gain follows: the library's own rule fuses it")
        return result

    def rewrite(self, op, x, epsilon, **_):
        gain = op.initializer(ir.tensor(np.ones(x.shape[-1], x.dtype.numpy())), name=f"{x.name}.unit_gain")
        return op.SimplifiedLayerNormalization(x, gain, axis=-1, epsilon=float(epsilon.const_value.numpy().item()),
                                               stash_type=int(ir.DataType.FLOAT))


_UNIT_GAIN_NORMS = pattern.RewriteRuleSet([_GainFreeRmsNorm.rule("GainFreeRmsNorm", divide=False),
                                           _GainFreeRmsNorm.rule("GainFreeRmsNormDivide", divide=True)])
