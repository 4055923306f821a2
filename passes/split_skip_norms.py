"""Split ONNX Runtime's skip norms into the residual ``Add`` and the norm they fuse.

ORT's ``SkipSimplifiedLayerNormalization(a, b, g[, β_in])`` and
``SkipLayerNormalization(a, b, g[, β[, β_in]])`` (``com.microsoft``, written by the
ONNX Runtime GenAI model builder and ORT's transformer optimizer) compute the residual sum
and its norm in one kernel:

    r = a + b [+ β_in]        (output 3, the residual stream running on)
    y = norm(r) ⊙ g [+ β]     (output 0)

The passes edit the residual ``Add`` and the norm separately (gains fold into the readers,
rotations act between them), so each skip norm becomes ``Add`` nodes giving ``r`` and
``SimplifiedLayerNormalization(r, g)`` (ORT's RMS norm, as the skip op computes it) or
``LayerNormalization(r, g, β)`` giving ``y``: the same arithmetic in the same float type.
``fuse_ort`` (lowered outputs) fuses the pairs back into the skip ops; a ``--portable``
output keeps them apart (ORT's session optimizer does not fuse ``Add`` with
``SimplifiedLayerNormalization``: checked on ORT 1.32). Outputs 1 and 2 (the mean and inverse deviation, for training) must be
unused.
"""

from __future__ import annotations

import dataclasses
import logging

import onnx_ir as ir

from oqcompile.graph import copy_type
from oqcompile.passes.base import TransformerPass
from oqcompile.structure.matchers import SKIP_NORMS

__all__ = ["SplitSkipNorms", "holds_skip_norms"]

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class SplitSkipNorms(TransformerPass):
    """Replace every skip norm by its residual ``Add`` and its norm (see module doc)."""

    name = "split_skip_norms"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        split = 0
        for node in list(model.graph):
            if node.domain == "com.microsoft" and node.op_type in SKIP_NORMS:
                if node.op_type == "SkipLayerNormalization" and model.opset_imports.get("", 1) < 17:
                    raise ir.passes.PreconditionError(f"{node.name}: splitting a SkipLayerNormalization needs "
                                                      "LayerNormalization, ONNX opset 17 or later")
                _split(model.graph, node)
                split += 1
        if split:
            logger.info("split %d skip norms into residual Add + norm", split)
        return ir.passes.PassResult(model, modified=bool(split))


def holds_skip_norms(model: ir.Model) -> bool:
    return any(node.domain == "com.microsoft" and node.op_type in SKIP_NORMS for node in model.graph)


def _split(graph: ir.Graph, skip: ir.Node) -> None:
    used = [index for index, output in enumerate(skip.outputs) if output.uses() or output.is_graph_output()]
    if any(index in (1, 2) for index in used):
        raise ir.passes.PreconditionError(f"{skip.op_type} {skip.name} has its mean or inverse-deviation "
                                          "output read: not an inference graph")
    inputs = list(skip.inputs) + [None] * (5 - len(skip.inputs))
    simplified = skip.op_type == "SkipSimplifiedLayerNormalization"
    a, b, gain = inputs[:3]
    beta, input_bias = (None, inputs[3]) if simplified else (inputs[3], inputs[4])
    nodes = [ir.node("Add", [a, b], name=f"{skip.name}/residual")]
    if input_bias is not None:
        nodes.append(ir.node("Add", [nodes[-1].outputs[0], input_bias], name=f"{skip.name}/residual_bias"))
    residual = nodes[-1].outputs[0]
    norm_inputs = [residual, gain] + ([] if simplified or beta is None else [beta])
    attributes = {"axis": -1, "epsilon": skip.attributes.get_float("epsilon", 1e-5)}
    if simplified:
        attributes["stash_type"] = 1
    norm = ir.node(SKIP_NORMS[skip.op_type], norm_inputs, attributes=attributes, name=f"{skip.name}/norm")
    nodes.append(norm)
    for node in nodes:
        node.doc_string = f"split from {skip.op_type} {skip.name} (oqcompile split_skip_norms)."
    copy_type(skip.outputs[0], norm.outputs[0])
    norm.outputs[0].name = f"{skip.name}.output"
    residual.name = f"{skip.name}.residual"
    if len(skip.outputs) > 3:
        copy_type(skip.outputs[3], residual)
    if residual.dtype is None:
        copy_type(skip.outputs[0], residual)
    graph.insert_before(skip, nodes)
    skip.outputs[0].replace_all_uses_with(norm.outputs[0], replace_graph_outputs=True)
    if len(skip.outputs) > 3:
        skip.outputs[3].replace_all_uses_with(residual, replace_graph_outputs=True)
    graph.remove(skip, safe=True)
