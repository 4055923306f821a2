"""Fold every norm's gain (and LayerNorm bias) into the linears that read it.

For a norm ``y = n(x) ⊙ g + β`` read by linears ``z = y W + b``:

    z = n(x) (diag(g) W) + (β W + b)

so ``W' = diag(g) W`` and ``b' = b + β W``, and the norm becomes scale-free (``g = 1``,
``β = 0``). Tied embeddings are untied on the way (the lm_head gets its own weight
``diag(g_final) Eᵀ``). The result is exactly the same function; scale-free RMS norms are
what makes the residual rotation exact (``rms(xQ) = rms(x)`` for orthogonal ``Q``).

LayerNorm also subtracts the mean, which no rotation preserves. With ``center=True`` (the
default) the residual stream is made mean-free as SliceGPT does: every writer of the
stream (token and positional embeddings, o_proj/fc2 weights and biases) is followed by
the centring projection ``C = I - 11ᵀ/d`` (``W' = W C``, ``b' = b C``, ``E' = E C``), so each
LayerNorm sees a zero-mean input and equals an RMS norm, which replaces it.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from oqcompile.graph import add_initializer, copy_type, replace_input
from oqcompile.passes.base import TransformerPass
from oqcompile.structure import Norm, Transformer, analyze
from oqcompile.weight_math import wide_rows

__all__ = ["FuseNorms"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FuseNorms(TransformerPass):
    """Fold norm gains/biases into the next linears; centre LayerNorm streams (see module doc)."""

    center: bool = True
    name = "fuse_norms"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        transformer = analyze(model)
        if self.center and any(n.kind == "layer" for n in transformer.norms()):
            _center_stream(transformer)
        for norm, readers in transformer.stream_readers():
            gain, bias = norm.gain(), norm.bias()
            for linear in readers:
                weight = linear.weight()
                new_bias = linear.bias()
                new_bias = np.zeros(weight.shape[1]) if new_bias is None else new_bias.astype(np.float64)
                if bias is not None:  # β W, one output channel (a row of Wᵀ) at a time
                    new_bias = new_bias + wide_rows(weight.T, lambda rows: rows @ bias[:, None], np.float64)[:, 0]
                if gain is not None:  # diag(g) W, formed as rows of Wᵀ (output channels) times g
                    gain64 = gain.astype(np.float64)
                    linear.set_weight(wide_rows(weight.T, lambda rows: rows * gain64, weight.dtype).T)
                if bias is not None or linear.bias_slot is not None:
                    linear.set_bias(new_bias)
            _make_scale_free(model.graph, norm, as_rms=self.center)
        logger.info("fused %d norms", len(transformer.norms()))
        return ir.passes.PassResult(model, modified=True)


def _center_stream(transformer: Transformer) -> None:
    """Make every stream writer mean-free over channels: ``W' = W - mean_j W``."""
    def centre(rows: np.ndarray) -> np.ndarray:
        return rows - rows.mean(axis=1, keepdims=True)

    for embedding in [transformer.embedding, *transformer.positional]:
        embedding.set_table(wide_rows(embedding.table(), centre, embedding.dtype))
    for linear in transformer.stream_writers():
        weight = linear.weight()
        linear.set_weight(wide_rows(weight, centre, weight.dtype))
        bias = linear.bias()
        if bias is not None:
            linear.set_bias(bias.astype(np.float64) - bias.mean())


def _make_scale_free(graph: ir.Graph, norm: Norm, as_rms: bool) -> None:
    """Drop the norm's gain and bias; a LayerNormalization becomes an RMS norm if ``as_rms``."""
    if norm.bias_slot is not None and norm.bias_slot[0].op_type == "Add":
        _bypass(graph, *norm.bias_slot)
        norm.bias_slot = None
    if not norm.fused:
        if norm.gain_slot is not None:
            _bypass(graph, *norm.gain_slot)
        return
    node = norm.gain_slot[0]
    if node.op_type == "LayerNormalization" and as_rms:
        _replace_with_rms(graph, norm, node)
        return
    width = norm.gain().shape[0]
    dtype = node.inputs[1].dtype.numpy()
    replace_input(node, 1, add_initializer(graph, f"{norm.name}.unit_gain", np.ones(width, dtype)))
    if norm.bias_slot is not None:
        replace_input(node, 2, None)


def _bypass(graph: ir.Graph, node: ir.Node, constant_index: int) -> None:
    """Remove a binary ``Mul``/``Add`` with a constant operand: its users read the other operand."""
    node.outputs[0].replace_all_uses_with(node.inputs[1 - constant_index], replace_graph_outputs=True)
    graph.remove(node, safe=True)


def _replace_with_rms(graph: ir.Graph, norm: Norm, node: ir.Node) -> None:
    """``LayerNormalization(x)`` on a zero-mean ``x`` equals ``x / sqrt(mean(x^2) + eps)``."""
    x = node.inputs[0]
    dtype = x.dtype.numpy() if x.dtype is not None else np.float32
    prefix = f"{norm.name}/rms"
    two = add_initializer(graph, f"{prefix}.two", np.array(2.0, dtype))
    eps = add_initializer(graph, f"{prefix}.epsilon", np.array(norm.epsilon, dtype))
    axes = add_initializer(graph, f"{prefix}.axes", np.array([-1], np.int64))
    square = ir.node("Pow", [x, two], name=f"{prefix}/square")
    mean = ir.node("ReduceMean", [square.outputs[0], axes], attributes={"keepdims": 1},
                   name=f"{prefix}/mean")
    shifted = ir.node("Add", [mean.outputs[0], eps], name=f"{prefix}/add_epsilon")
    root = ir.node("Sqrt", [shifted.outputs[0]], name=f"{prefix}/sqrt")
    out = ir.node("Div", [x, root.outputs[0]], name=f"{prefix}/normalize")
    new_nodes = [square, mean, shifted, root, out]
    for n in new_nodes:
        n.doc_string = "RMS norm replacing a LayerNorm whose input oqcompile made mean-free."
    out.outputs[0].name = f"{norm.name}.output"
    copy_type(node.outputs[0], out.outputs[0])
    graph.insert_after(node, new_nodes)
    node.outputs[0].replace_all_uses_with(out.outputs[0], replace_graph_outputs=True)
    graph.remove(node, safe=True)
