"""Remove rotations that need not run online.

Two rules, applied to rotations emitted by :func:`oqcompile.rotation.insert_hadamard`
that are not marked *online* (online ones are quantization points and stay):

1. **Cancel**: ``x M M⁻¹ = x``. A rotation immediately followed by its inverse (same size,
   the second reading only the first) is removed together with it.
2. **Fold**: ``(x M) W = x (M W)``. A rotation whose output is read only by linears with
   constant weights is folded into them, ``W' = M W``, and removed.

Both keep the function exactly (up to float rounding of the folded weight).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from oqcompile.passes.base import TransformerPass
from oqcompile.rotation import find_rotations, remove_rotation
from oqcompile.structure import match_linear

__all__ = ["CancelRotations"]


@dataclasses.dataclass
class CancelRotations(TransformerPass):
    """Cancel adjacent inverse rotation pairs and fold rotations into following weights."""

    name = "cancel_rotations"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        rotations = [r for r in find_rotations(graph) if not r.online]
        by_input = {id(r.input): r for r in rotations}
        removed: set[str] = set()
        for first in rotations:
            second = by_input.get(id(first.output))
            if (second is not None and first.name not in removed and second.size == first.size
                    and second.inverse != first.inverse
                    and all(n in second.nodes for n in first.output.consumers())):
                remove_rotation(graph, second)
                remove_rotation(graph, first)
                removed |= {first.name, second.name}
                modified = True
        for rotation in rotations:
            if rotation.name in removed:
                continue
            linears = [match_linear(n) for n in rotation.output.consumers()]
            if not linears or any(lin is None or lin.input is not rotation.output for lin in linears):
                continue
            matrix = rotation.matrix()
            for linear in linears:
                linear.name = rotation.name.split("/")[0]
                linear.set_weight(matrix @ linear.weight().astype(np.float64))
            remove_rotation(graph, rotation)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
