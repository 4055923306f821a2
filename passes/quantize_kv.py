"""Quantize the KV cache: K and V per head, asymmetric, in groups of channels (QuaRot's KV4).

The values quantized are exactly what a KV cache stores:

- K after RoPE and after the per-head Hadamard of ``rotate_qk`` when the graph has one
  (the rotation spreads K's outlier channels, which is what makes 4-bit keys work); for
  models without RoPE, K is the k projection's output;
- V as the v projection produces it (``rotate_heads`` folds its rotation into ``W_v``).

Each token's head vector is cut into groups of ``group`` channels (``group`` divides the
head size; by default one group per head) and quantized with its own scale and zero point
(:func:`oqcompile.qdq.insert_group_qdq`): ``x̂ = s · (clip(round(x / s) + z, 0, 2^b - 1) - z)``.
With a KV-cache export the quantized K and V are what ``present.*`` returns.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from oqcompile.graph import require_opset
from oqcompile.passes.base import TransformerPass
from oqcompile.qdq import insert_group_qdq
from oqcompile.rotation import find_rotations
from oqcompile.structure import analyze

__all__ = ["QuantizeKV"]


@dataclasses.dataclass
class QuantizeKV(TransformerPass):
    """Asymmetric per-head group QDQ on K (post-RoPE, post-rotation) and V (see module doc)."""

    bits: int = 4
    group: int | None = None  # channels per group; None: the head size
    name = "quantize_kv"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        rotated = {id(r.input): r.output for r in find_rotations(model.graph)}
        require_opset(model, 21)  # INT4 codes and blocked (per-token/group) QDQ
        for block in analyze(model).blocks:
            attn = block.attention
            if attn.fused is not None and (attn.packed is not None or attn.rotary_inside):
                raise ir.passes.PreconditionError(
                    f"the keys and values of block {block.index} are cached inside {attn.fused.op_type} "
                    f"{attn.fused.name} (packed with the queries or rotated inside the op), out of reach of a "
                    "quantize-dequantize: KV quantization needs separate k and v inputs with RoPE outside")
            group = self.group or attn.head_dim
            if attn.head_dim % group:
                raise ir.passes.PreconditionError(
                    f"KV group size {group} does not divide the head size {attn.head_dim}")
            keys = attn.k_rotary if attn.k_rotary is not None else attn.k.output
            keys = rotated.get(id(keys), keys)
            insert_group_qdq(keys, bits=self.bits, group=group, name=f"{attn.k.name}.cache")
            insert_group_qdq(attn.v.output, bits=self.bits, group=group, name=f"{attn.v.name}.cache")
        return ir.passes.PassResult(model, modified=True)
