"""R2: per-head Hadamard between V and O, plus the online Hadamard at o_proj's input (QuaRot).

Attention mixes tokens, never channels within a head, so a per-head rotation ``H_d``
(``d`` = head size, seeded random) applied to V passes through unchanged:
``softmax(·) (V H_d) = (softmax(·) V) H_d``. Hence

- ``W_v' = W_v (I_kv ⊗ H_d)``, ``b_v' = b_v (I_kv ⊗ H_d)`` (GQA: every KV head alike),
- ``W_o' = (I_h ⊗ H_d)ᵀ W_o``.

Then the whole o_proj input (``h·d`` channels, e.g. 576 = 36·16 for SmolLM2's 9 heads)
is rotated online by ``H_{h·d}`` with its inverse folded into the weight,
``W_o'' = H_{h·d}ᵀ W_o'``, so the activation that reaches o_proj is outlier-free across
heads as well. Both steps keep the function exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from oqcompile.hadamard import hadamard, random_hadamard
from oqcompile.passes.base import TransformerPass
from oqcompile.rotation import insert_hadamard
from oqcompile.structure import Block, analyze

__all__ = ["RotateHeads", "rotate_heads"]


@dataclasses.dataclass
class RotateHeads(TransformerPass):
    """Per-head V/O rotation and online Hadamard at o_proj's input (see module doc)."""

    seed: int = 0
    online: bool = True
    name = "rotate_heads"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        rotate_heads(model, lambda block: random_hadamard(block.attention.head_dim, self.seed + 1), self.online)
        return ir.passes.PassResult(model, modified=True)


def rotate_heads(model: ir.Model, per_head: Callable[[Block], np.ndarray], online: bool) -> None:
    """Rotate V/O of each block by its orthogonal ``per_head(block)`` (head size), with the online
    Hadamard at o_proj's input if ``online`` (see module doc)."""
    for block in analyze(model).blocks:
        attn = block.attention
        rotation = per_head(block)
        v_rotation = np.kron(np.eye(attn.num_kv_heads), rotation)
        o_rotation = np.kron(np.eye(attn.num_heads), rotation)
        attn.v.rotate_outputs(v_rotation)
        if online:
            insert_hadamard(attn.o.input, attn.o.in_features, attn.o.name)
            o_rotation = o_rotation @ hadamard(attn.o.in_features)
        attn.o.rotate_inputs(o_rotation)
