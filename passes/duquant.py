"""DuQuant: per-layer block rotations and a zigzag channel permutation of every linear input.

For each activation read by the linears of a block (the two norm outputs, read by q/k/v and
gate/up; the inputs of o_proj and down_proj), a transform ``T = B₁ P B₂`` is fitted on sampled
calibration rows (:mod:`oqcompile.block_rotation`: block rotations that spread each block's
outlier channel, the zigzag permutation that deals large channels evenly over the blocks,
block rotations again). ``T`` is orthogonal, so for every reader

    x W = (x T)(Tᵀ W):

the reader's weight becomes ``W' = Tᵀ W`` and ``x T`` is computed online
(:func:`oqcompile.rotation.insert_block_rotation`, ``2 b`` multiply-adds per channel and token).
Exact in float. The transform goes between the stream and the linears, so it comes after every
pass that folds into their inputs (``build_recipe`` checks the order); the lm_head is left alone.
Blocks are the largest power of two up to ``block`` that divides the channels; an activation
whose channels have no such divisor of at least 8 is left as it is.
"""

from __future__ import annotations

import dataclasses
import logging

import onnx_ir as ir

from oqcompile import qdq
from oqcompile.block_rotation import BlockRotation, block_size, fit_block_rotation
from oqcompile.passes.base import CalibratedPass
from oqcompile.rotation import insert_block_rotation
from oqcompile.structure import Linear, analyze

__all__ = ["DuQuant"]

logger = logging.getLogger(__name__)

_SMALLEST_BLOCK = 8


@dataclasses.dataclass
class DuQuant(CalibratedPass):
    """Fit ``T = B₁ P B₂`` on each linear input, fold ``Tᵀ`` into its readers, apply ``T`` online."""

    block: int = 128
    steps: int = 64
    sample_tokens: int = 512
    seed: int = 0
    name = "duquant"

    def __post_init__(self):
        if self.block < _SMALLEST_BLOCK or self.steps < 0 or self.sample_tokens < 1:
            raise ValueError(f"needs block >= {_SMALLEST_BLOCK}, steps >= 0 and sample_tokens >= 1")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        groups = _reader_groups(model)
        fitted: list[tuple[list[Linear], BlockRotation]] = []
        stats_by_block = self.stream_statistics(model, [readers[0].input for readers in groups],
                                                sample_tokens=self.sample_tokens)
        by_input = {readers[0].input.name: readers for readers in groups}
        for stats in stats_by_block:
            for value_name, observed in stats.items():
                readers = by_input[value_name]
                block = block_size(observed.channels, self.block)
                if block < _SMALLEST_BLOCK:
                    logger.warning("duquant: %s has %d channels, no block of %d or more divides them: left alone",
                                   readers[0].name, observed.channels, _SMALLEST_BLOCK)
                    continue
                seed = self.seed + len(fitted)
                fitted.append((readers, fit_block_rotation(observed.sample, block, self.steps, seed)))
        for readers, transform in fitted:
            insert_block_rotation(readers[0].input, transform, readers[0].name)
            for linear in readers:
                linear.rotate_inputs(transform.rows)
        logger.info("DuQuant transformed the inputs of %d linear groups", len(fitted))
        return ir.passes.PassResult(model, modified=bool(fitted))


def _reader_groups(model: ir.Model) -> list[list[Linear]]:
    """The linears of every block, grouped by the activation they read (one list per activation)."""
    transformer = analyze(model)
    groups = [readers for _, readers in transformer.block_norm_readers()]
    groups += [[writer] for writer in transformer.stream_writers()]
    for readers in groups:
        if len({id(linear.input) for linear in readers}) != 1:
            raise ir.passes.PreconditionError(f"duquant: {', '.join(r.name for r in readers)} read one norm "
                                              "through different nodes")
        prescaled = [linear.name for linear in readers if qdq.is_prescaled(linear.node)]
        if prescaled:
            raise ir.passes.PreconditionError(f"duquant: {prescaled[0]} reads codes that OutlierTune already "
                                              "scaled, which a rotation would mix: give outliertune "
                                              "prescale = false")
    return groups
