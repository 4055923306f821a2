"""Split ONNX Runtime's fused linears into the linear and the op fused after it.

ORT's session optimizer (``ORT_ENABLE_EXTENDED`` and above, in a file saved with
``optimized_model_filepath``) folds what follows a weight's product into the product's kernel
(``com.microsoft``):

    FusedGemm(A, W, C)   = act(α · A'W' + β · C)      (OPT's fc1 + ReLU)
    FusedMatMul(A, W)    = α · A·W'                    (Gemma 2's lm_head before the soft cap's division)

with ' the ``transA``/``transB`` transposes. The passes edit a linear's weight, input and output
as one ``MatMul``/``Gemm`` (a scale folded into its output columns, its input quantized, the
node replaced by ``oq.QMatMul`` when lowered), so each fused linear with a constant 2-D weight
becomes ``Gemm(A, W, C)`` followed by the activation op, or ``MatMul(A, W')`` followed by
``Mul(α)``: the same arithmetic, with one more rounding where the scale was inside the kernel.
ORT fuses them again when it loads the output. A ``FusedMatMul`` of two activations (attention
scores with kᵀ folded in) is not a linear and stays.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from oqcompile.graph import copy_type, is_const
from oqcompile.passes.base import TransformerPass
from oqcompile.structure.matchers import const_ndim

__all__ = ["SplitFusedLinears", "holds_fused_linears"]

logger = logging.getLogger(__name__)

# FusedGemm's activation attribute -> the ONNX op and its attributes read from activation_alpha/_beta.
_ACTIVATIONS = {"Relu": {}, "Tanh": {}, "Sigmoid": {}, "LeakyRelu": {"alpha": "activation_alpha"},
                "HardSigmoid": {"alpha": "activation_alpha", "beta": "activation_beta"}}


@dataclasses.dataclass
class SplitFusedLinears(TransformerPass):
    """Replace every ``FusedGemm``/``FusedMatMul`` of a constant 2-D weight by the linear and the op
    fused after it (see module doc)."""

    name = "split_fused_linears"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        fused = [node for node in model.graph if _fused_linear(node)]
        for node in fused:
            (_split_gemm if node.op_type == "FusedGemm" else _split_matmul)(model.graph, node)
        if fused:
            logger.info("split %d linears ORT fused with the op after them", len(fused))
        return ir.passes.PassResult(model, modified=bool(fused))


def holds_fused_linears(model: ir.Model) -> bool:
    return any(_fused_linear(node) for node in model.graph)


def _fused_linear(node: ir.Node) -> bool:
    if node.domain != "com.microsoft" or node.op_type not in ("FusedGemm", "FusedMatMul"):
        return False
    weight = node.inputs[1]
    return not is_const(node.inputs[0]) and is_const(weight) and const_ndim(weight) == 2


def _split_gemm(graph: ir.Graph, fused: ir.Node) -> None:
    activation = fused.attributes.get_string("activation", "")
    if activation not in _ACTIVATIONS:
        raise ir.passes.PreconditionError(f"FusedGemm {fused.name} applies {activation or 'no activation'}; "
                                          f"oqcompile splits those with {', '.join(_ACTIVATIONS)}")
    gemm_attributes = {name: fused.attributes[name].value for name in ("alpha", "beta", "transA", "transB")
                       if name in fused.attributes}
    gemm = ir.node("Gemm", list(fused.inputs), attributes=gemm_attributes, name=f"{fused.name}/gemm")
    act = ir.node(activation, gemm.outputs, name=f"{fused.name}/{activation.lower()}",
                  attributes={name: fused.attributes.get_float(source)
                              for name, source in _ACTIVATIONS[activation].items() if source in fused.attributes})
    _replace(graph, fused, [gemm, act], [gemm, act])


def _split_matmul(graph: ir.Graph, fused: ir.Node) -> None:
    if any(fused.attributes.get_int(name, 0) for name in ("transA", "transBatchA", "transBatchB")):
        raise ir.passes.PreconditionError(f"FusedMatMul {fused.name} transposes its activation input: "
                                          "not a linear layer oqcompile reads")
    data, weight = fused.inputs
    nodes = []
    if fused.attributes.get_int("transB", 0):
        nodes.append(ir.node("Transpose", [weight], attributes={"perm": [1, 0]}, name=f"{fused.name}/weight_t"))
        weight = nodes[-1].outputs[0]
    matmul = ir.node("MatMul", [data, weight], name=f"{fused.name}/matmul")
    data_path = [matmul]
    alpha = fused.attributes.get_float("alpha", 1.0)
    if alpha != 1.0:
        dtype = (fused.outputs[0].dtype or ir.DataType.FLOAT).numpy()
        scale = ir.node("Constant", [], attributes={"value": ir.tensor(np.array(alpha, dtype))},
                        name=f"{fused.name}/alpha")
        data_path.append(ir.node("Mul", [matmul.outputs[0], scale.outputs[0]], name=f"{fused.name}/scale"))
        nodes.append(scale)
    _replace(graph, fused, nodes + data_path, data_path)


def _replace(graph: ir.Graph, fused: ir.Node, nodes: list[ir.Node], data_path: list[ir.Node]) -> None:
    """Put ``nodes`` in place of ``fused``; those on ``data_path`` (the last gives the result) take its
    output's type, and the last its name."""
    for node in nodes:
        node.doc_string = f"split from {fused.op_type} {fused.name} (oqcompile split_fused_linears)."
    for node in data_path:
        copy_type(fused.outputs[0], node.outputs[0])
    graph.insert_before(fused, nodes)
    result, name = data_path[-1].outputs[0], fused.outputs[0].name
    fused.outputs[0].replace_all_uses_with(result, replace_graph_outputs=True)
    graph.remove(fused, safe=True)
    result.name = name
