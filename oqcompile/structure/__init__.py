"""Structure analysis: find the transformer inside an ONNX graph, from the graph alone.

The result, :class:`Transformer`, names every part a pass needs by its *role*: the token
(and positional) embedding, per block the attention norm, q/k/v/o linears, head layout
and RoPE outputs, the MLP norm and its linears, the residual adds, the final norm and
the lm_head. Initializer names are never used; only dataflow is.

How it is found:

1. Every linear is collected: ``MatMul(x, W)``, ``MatMul(x, Transpose(W))`` and
   ``Gemm(x, W, b, transB)`` with a constant 2-D weight, plus a following ``Add`` of a
   constant 1-D bias. Weights are presented as ``[in, out]`` whatever the storage.
2. Every norm is collected: ``LayerNormalization``, ``RMSNormalization``, ORT's
   ``SimplifiedLayerNormalization``, and the decomposed form
   ``x * 1/sqrt(mean(x^2) + eps) [* g]`` (Pow or Mul, Reciprocal or Div).
3. The residual stream is walked from the token embedding ``Gather``: each stream value
   is read by a norm and by a residual ``Add`` whose other operand is the output of a
   linear (the sub-layer's *writer*). Linears reading the norm's output are the
   sub-layer's *readers*. A sub-layer containing score/context MatMuls between two
   activations is attention (q reaches the score MatMul's left input, k its right input,
   v the context MatMul's right input); otherwise it is the MLP (the reader feeding the
   activation function is the gate). The stream value read by a norm but by no residual
   ``Add`` is the final norm's input; the linear reading that norm is the lm_head.
4. Attention may also be one of ONNX Runtime's fused ops (``GroupQueryAttention``,
   ``MultiHeadAttention``): q, k and v are the linears feeding its inputs 0, 1 and 2, or
   column ranges of one packed projection feeding input 0 (the GenAI builder's QKV). ORT's
   skip norms (residual add and norm in one op) and its linears fused with the op after them
   (``FusedGemm``, ``FusedMatMul``) are read once split apart (:mod:`oqcompile.passes.split_skip_norms`,
   :mod:`oqcompile.passes.split_fused_linears`, which ``optimize`` and ``inspect`` run first);
   a token table may be stored transposed (``Gather(Transpose(W))``).

Exporters may put ``Cast``/``Identity`` nodes anywhere; they are looked through.

The package has three parts: :mod:`~oqcompile.structure.roles` (what passes use),
:mod:`~oqcompile.structure.matchers` (single linears, norms and attention details) and
:mod:`~oqcompile.structure.stream` (the residual-stream walk).
"""

from oqcompile.structure.matchers import match_linear
from oqcompile.structure.roles import MLP, Attention, Block, Embedding, Linear, Norm, StructureError, Transformer
from oqcompile.structure.stream import analyze

__all__ = ["MLP", "Attention", "Block", "Embedding", "Linear", "Norm", "StructureError", "Transformer", "analyze",
           "match_linear"]
