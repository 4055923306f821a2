"""SmoothQuant: migrate activation outliers of norm-fed linears into their weights.

For a stream norm with output ``y`` read by linears with weights ``W`` (``[in, out]``),
per input channel ``j``

    s_j = max|y_j|^α / max_k |W_jk|^(1-α)

(the weight maximum taken over all readers), and ``y W = (y / s) (diag(s) W)``: the norm
emits ``y / s`` (folded into its gain and bias) and each reader gets ``W' = diag(s) W``.
``α = 0.5`` balances the difficulty between activations and weights. Exact in float; the
activations are then quantized per token as usual. The final norm is left alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from oqcompile.passes.base import CalibratedPass
from oqcompile.structure import analyze

__all__ = ["SmoothQuant"]


@dataclasses.dataclass
class SmoothQuant(CalibratedPass):
    """Fold ``s = max|y|^α / max|W|^(1-α)`` between each norm and its readers (see module doc)."""

    alpha: float = 0.5
    name = "smoothquant"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        pairs = analyze(model).block_norm_readers()
        stats = self.statistics(model, [readers[0].input for _, readers in pairs])
        for norm, readers in pairs:
            activation_max = np.maximum(stats[readers[0].input.name].absmax, 1e-5)
            weight_max = np.maximum(np.max([np.abs(lin.weight()).max(axis=1) for lin in readers], axis=0), 1e-5)
            scale = np.maximum(activation_max ** self.alpha / weight_max ** (1 - self.alpha), 1e-5)
            norm.apply_affine(1.0 / scale)
            for linear in readers:
                linear.set_weight(scale[:, None] * linear.weight().astype(np.float64))
        return ir.passes.PassResult(model, modified=True)
