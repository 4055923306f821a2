"""R1: rotate the residual stream by a seeded random Hadamard matrix ``Q`` (QuaRot).

With every stream norm scale-free (run ``fuse_norms`` first) the norms commute with an
orthogonal ``Q``: ``rms(xQ) = rms(x)``, so ``norm(xQ) = norm(x) Q``. The stream ``x`` is
replaced by ``x' = xQ`` by rewriting every constant that writes or reads it:

- embeddings (token and positional) ``E' = E Q``;
- writers (o_proj, down_proj/fc2) ``W' = W Q``, ``b' = b Q``;
- readers (q/k/v, gate/up/fc1, lm_head) ``W' = Qᵀ W`` (biases unchanged),

so every reader computes ``x' W' = x Q Qᵀ W = x W``: the function is unchanged, while the
stream's outlier channels are spread over all channels. In a post-norm block (Gemma 2/3:
``x + g ⊙ rms(y W_o)``) the stream passes through no norm on its way, but the writer's output
does, and ``rms(yW_oQ) ⊙ g ≠ (rms(yW_o) ⊙ g) Q`` for a gain that is not uniform: there the pass
declines with a warning (nothing is rotated). Sums are formed in float64 (float32 for 16-bit
weights: :mod:`oqcompile.weight_math`), and
``Q = H diag(s)`` is applied through ``H``'s Kronecker factors (:func:`oqcompile.hadamard.hadamard_rows`):
``O(n (a + b))`` multiply-adds per row of ``n = a · b`` instead of ``O(n²)``.
"""

from __future__ import annotations

import dataclasses
import logging

import onnx_ir as ir

from oqcompile.hadamard import random_hadamard_rows
from oqcompile.passes.base import TransformerPass
from oqcompile.structure import Norm, Transformer, analyze
from oqcompile.weight_math import RotationLike

__all__ = ["RotateResidual", "post_norm_blocking_rotation", "rotate_residual_stream"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RotateResidual(TransformerPass):
    """Rotate the residual stream by ``random_hadamard(hidden, seed)`` (see module doc)."""

    seed: int = 0
    name = "rotate_residual"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        hidden = analyze(model).hidden_size
        modified = rotate_residual_stream(model, random_hadamard_rows(hidden, self.seed))  # O(n (a + b)) a row
        return ir.passes.PassResult(model, modified=modified)


def rotate_residual_stream(model: ir.Model, rotation: RotationLike) -> bool:
    """Rotate the stream by the orthogonal ``rotation`` (see module doc); False where a post-norm
    block makes it decline."""
    transformer = analyze(model)
    post_norm = post_norm_blocking_rotation(transformer)
    if post_norm is not None:
        logger.warning("R1 not applied: %s normalizes a sub-layer's output before the residual add, and a "
                       "rotation of the stream cannot pass that norm's gain (rms(xQ) g is not rms(x) g Q); "
                       "the passes that do not rotate the stream still run", post_norm.name)
        return False
    for embedding in [transformer.embedding, *transformer.positional]:
        embedding.rotate(rotation)
    for writer in transformer.stream_writers():
        writer.rotate_outputs(rotation)
    for _, readers in transformer.stream_readers():
        for reader in readers:
            reader.rotate_inputs(rotation)
    return True


def post_norm_blocking_rotation(transformer: Transformer) -> Norm | None:
    """The first post-norm with a gain, which no stream rotation can pass; else None, after checking
    that every stream norm is scale-free RMS (:class:`PreconditionError` if not: ``fuse_norms`` first)."""
    post_norm = next((norm for block in transformer.blocks for norm in block.post_norms
                      if norm.kind != "rms" or not norm.scale_free), None)
    if post_norm is not None:
        return post_norm
    for norm in transformer.norms():
        if norm.kind != "rms" or not norm.scale_free:
            raise ir.passes.PreconditionError(
                f"norm {norm.name} is {'a LayerNorm' if norm.kind == 'layer' else 'not scale-free'}: "
                "residual rotation is not function-preserving here; run fuse_norms first")
    return None
