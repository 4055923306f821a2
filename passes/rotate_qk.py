"""R3: per-head Hadamard on Q and K (QuaRot), so the KV cache quantizes well.

Scores are ``q kᵀ`` per head; with an orthonormal ``H_d`` (``d`` = head size),
``(q H_d)(k H_d)ᵀ = q H_d H_dᵀ kᵀ = q kᵀ``, so rotating both keeps the function while
the cached keys lose their outlier channels.

- With RoPE, the rotation must come after it (RoPE does not commute with ``H_d``), so it
  is inserted online on the post-RoPE q and k.
- Without RoPE (OPT), q and k are plain linear outputs and the rotation is folded into the
  projections: ``W_q' = W_q (I_h ⊗ H_d)``, ``b_q' = b_q (I_h ⊗ H_d)``, and likewise for k
  with its ``h_kv`` heads. Scalar score scalings commute with it.
- Where RoPE runs inside ORT's fused attention (``GroupQueryAttention`` with ``do_rotary``,
  as the ONNX Runtime GenAI builder writes it), there is no post-RoPE q or k in the graph:
  that block is left unrotated with a warning. R3 serves KV-cache quantization only, which
  such graphs keep inside the kernel anyway. Likewise where the graph computes RoPE (it has
  ``Sin``/``Cos``) in a form not found on q and k: folding ``H_d`` into ``W_q`` would then not
  commute with the RoPE that follows.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from oqcompile.hadamard import hadamard
from oqcompile.passes.base import TransformerPass
from oqcompile.rotation import insert_hadamard
from oqcompile.structure import analyze

__all__ = ["RotateQK"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RotateQK(TransformerPass):
    """Rotate every head of q and k by ``H_d``: online after RoPE, else folded (see module doc)."""

    name = "rotate_qk"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        blocks = analyze(model).blocks
        inside = [block.attention.fused for block in blocks if block.attention.rotary_inside]
        if inside:
            logger.warning("R3 not applied to %d of %d blocks: %s (e.g. %s) applies RoPE inside the kernel, and "
                           "the rotation must come after it; the other rotations are unaffected",
                           len(inside), len(blocks), inside[0].op_type, inside[0].name)
        has_rope = any(node.op_type in ("Sin", "Cos", "RotaryEmbedding") for node in model.graph)
        unplaced = [block for block in blocks if has_rope and block.attention.q_rotary is None
                    and not block.attention.rotary_inside]
        skipped = {block.index for block in unplaced}
        if unplaced:
            logger.warning("R3 not applied to %d of %d blocks: the graph computes RoPE, but not in a form found on "
                           "the q and k of %s (e.g. partial-rotary slices), and the rotation must come after it; "
                           "the other rotations are unaffected", len(unplaced), len(blocks),
                           unplaced[0].attention.q.name)
        for block in blocks:
            attn = block.attention
            if attn.rotary_inside or block.index in skipped:
                continue
            if attn.q_rotary is not None and attn.k_rotary is not None:
                insert_hadamard(attn.q_rotary, attn.head_dim, attn.q.name)
                insert_hadamard(attn.k_rotary, attn.head_dim, attn.k.name)
            elif attn.q_rotary is None and attn.k_rotary is None:
                per_head = hadamard(attn.head_dim)
                attn.q.rotate_outputs(np.kron(np.eye(attn.num_heads), per_head))
                attn.k.rotate_outputs(np.kron(np.eye(attn.num_kv_heads), per_head))
            else:
                raise ir.passes.PreconditionError(
                    f"attention of block {block.index} applies RoPE to only one of q and k")
        return ir.passes.PassResult(model, modified=len(inside) + len(unplaced) < len(blocks))
