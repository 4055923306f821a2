"""Store the token embedding table as int8 codes with a scale per block of columns.

The table ``E`` (``[vocab, hidden]``) becomes codes ``Q`` and scales ``s`` per row and
block of ``group`` columns (default 32, or 16, 8, … where 32 does not divide ``hidden``), round to nearest: ``s[v, g] = max_{j∈g} |E[v, j]| / 127``,
``Q = round(E / s)`` (:func:`oqcompile.quant.rtn` on ``Eᵀ``). The lookup ``E[ids]`` becomes

    DequantizeLinear(Gather(Q, ids), Gather(s, ids), axis=-1, block_size=group)

standard ONNX (opset 21) that reads a quarter of the float bytes. Only the rows looked up
are dequantized, so the cost per token is ``hidden`` multiplies. A tied lm_head keeps
reading the float table (run the pass after ``fuse_norms``, which unties it, to drop it).
Run it after the rotations: they rewrite the table.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import onnx_ir as ir

from oqcompile import quant
from oqcompile.graph import FLOAT_TYPES, add_initializer, require_opset
from oqcompile.passes.base import TransformerPass
from oqcompile.structure import analyze

__all__ = ["QuantizeEmbedding"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class QuantizeEmbedding(TransformerPass):
    """Token embedding as int8 codes with per-row, per-block scales (see module doc)."""

    group: int | None = None  # columns per scale; None: 32, or the power of two below it dividing the hidden size
    name = "quantize_embedding"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        embedding = analyze(model).embedding
        require_opset(model, 21)  # blocked DequantizeLinear
        table_value = embedding.stored_value()
        if table_value.dtype not in FLOAT_TYPES:
            raise ir.passes.PreconditionError(f"the token embedding table {table_value.name} is "
                                              f"{table_value.dtype}, not float: already quantized?")
        table = embedding.table()
        vocab, hidden = table.shape
        group = self.group or math.gcd(hidden, 32)
        if hidden % group:
            raise ir.passes.PreconditionError(
                f"embedding group size {group} does not divide the hidden size {hidden}")
        quantized = quant.rtn(table.T, 8, group)  # groups run along the hidden axis of each row
        graph, gather, name = embedding.node.graph, embedding.node, embedding.name
        codes = add_initializer(graph, f"{name}.weight_int8", np.ascontiguousarray(quantized.codes.T))
        scales = add_initializer(graph, f"{name}.weight_scale",
                                 np.ascontiguousarray(quantized.scales.T).astype(embedding.dtype))
        ids = gather.inputs[1]
        gathered_scales = ir.node("Gather", [scales, ids], attributes={"axis": 0}, name=f"{name}/gather_scales")
        rows = gather.outputs[0]
        dequantize = ir.node("DequantizeLinear", [rows, gathered_scales.outputs[0]],
                             attributes={"axis": -1, "block_size": group}, name=f"{name}/dequantize")
        for node, text in ((gather, f"int8 rows of {name} (one scale per {group} columns)."),
                           (gathered_scales, f"the scales of those rows of {name}."),
                           (dequantize, f"{name} rows back to float.")):
            node.doc_string = text
        restored = dequantize.outputs[0]
        restored.dtype, restored.shape = table_value.dtype, rows.shape
        restored.name = f"{name}.dequantized"
        for user, index in list(rows.uses()):
            if user is not dequantize:
                user.replace_input_with(index, restored)
        gather.replace_input_with(0, codes)
        rows.dtype = ir.DataType.INT8
        graph.insert_after(gather, [gathered_scales, dequantize])
        logger.info("token embedding %dx%d stored as int8 in blocks of %d", vocab, hidden, group)
        return ir.passes.PassResult(model, modified=True)
