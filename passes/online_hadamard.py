"""R4: an online Hadamard before every MLP output projection (down_proj / fc2), QuaRot style.

The activation ``h`` entering ``down_proj`` is rotated in the graph, ``h' = h H_n``
(``n`` = intermediate size, ``H_n = H_K ⊗ H_{2^k}`` emitted as Reshape/MatMul, see
:mod:`oqcompile.rotation`), and the inverse is folded into the weight,
``W' = H_nᵀ W``, so ``h' W' = h W``. The rotated ``h'`` has no outlier channels, which is
what a later activation quantizer sees. With ``fold_inverse=False`` the inverse is emitted
as a second (non-online) rotation instead, for ``cancel_rotations`` to fold.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from oqcompile.hadamard import hadamard_rows
from oqcompile.passes.base import TransformerPass
from oqcompile.rotation import insert_hadamard
from oqcompile.structure import analyze

__all__ = ["OnlineHadamard"]


@dataclasses.dataclass
class OnlineHadamard(TransformerPass):
    """Insert ``H_n`` before each down_proj/fc2 and fold ``H_nᵀ`` into its weight."""

    fold_inverse: bool = True
    name = "online_hadamard"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for block in analyze(model).blocks:
            down = block.mlp.down
            size = down.in_features
            rotated = insert_hadamard(down.input, size, down.name)
            if self.fold_inverse:
                down.rotate_inputs(hadamard_rows)  # through its Kronecker factors: no dense n x n matrix
            else:
                insert_hadamard(rotated, size, down.name, inverse=True, online=False)
        return ir.passes.PassResult(model, modified=True)
