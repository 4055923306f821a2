"""R3: online per-head Hadamard on Q and K after RoPE (QuaRot), for a quantizable KV cache.

Scores are ``q kᵀ`` per head; with an orthonormal ``H_d`` (``d`` = head size),
``(q H_d)(k H_d)ᵀ = q H_d H_dᵀ kᵀ = q kᵀ``, so rotating both after RoPE keeps the function
while the cached keys lose their outlier channels. RoPE itself does not commute with
``H_d``, which is why the rotation stays online instead of being folded into W_q/W_k.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from oqcompile.passes.base import TransformerPass
from oqcompile.rotation import insert_hadamard
from oqcompile.structure import analyze

__all__ = ["RotateQK"]


@dataclasses.dataclass
class RotateQK(TransformerPass):
    """Insert ``H_d`` on the post-RoPE q and k of every attention (see module doc)."""

    name = "rotate_qk"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for block in analyze(model).blocks:
            attn = block.attention
            if attn.q_rotary is None or attn.k_rotary is None:
                raise ir.passes.PreconditionError(
                    f"attention of block {block.index} has no RoPE: rotate_qk places its rotation "
                    "after RoPE and is not needed without it")
            insert_hadamard(attn.q_rotary, attn.head_dim, attn.q.name)
            insert_hadamard(attn.k_rotary, attn.head_dim, attn.k.name)
        return ir.passes.PassResult(model, modified=True)
