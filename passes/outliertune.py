"""OutlierTune: pre-executed dequantization and symmetrization of norm-fed linear inputs.

For a stream norm with output ``y`` read by linears ``z = y W + b`` (q/k/v, gate/up or
fc1), calibration gives each channel's range ``[min_j, max_j]``. With the midpoint
``m_j = (max_j + min_j) / 2`` and the scale ``s_j = clip · (max_j - min_j) / 2 / (2^(b-1) - 1)``:

- symmetrization: ``y - m`` has a range balanced around zero in every channel;
- pre-executed dequantization: ``y' = (y - m) / s`` is already in code units, so the
  activation quantizer only rounds and clips (scale 1, nothing computed at run time).

Both are folded into constants, keeping the function exact in float:

- the norm emits ``y' = y · (1/s) + (-m/s)`` (its gain and bias, or an appended Mul/Add
  where an RMS norm has none);
- each reader gets ``W' = diag(s) W`` and ``b' = b + m W``, since
  ``y W + b = (y' ⊙ s + m) W + b = y' (diag(s) W) + (m W + b)``.

The readers are marked prescaled (:func:`oqcompile.qdq.mark_prescaled`) so that ``insert_qdq`` gives them the
scale-free QDQ. With ``prescale=False`` only the symmetrization is folded (``s = 1``): the
inputs stay per-token quantized, but every token loses the calibrated per-channel offset
``m`` that would otherwise inflate its absmax (useful at 4 bits, where static ranges are
too coarse). The final norm (lm_head) is left alone.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from oqcompile import qdq
from oqcompile.passes.base import CalibratedPass
from oqcompile.quant import qmax
from oqcompile.structure import analyze

__all__ = ["OutlierTune"]

logger = logging.getLogger(__name__)

_MIN_HALF_RANGE = 1e-6  # channels that never move keep a usable scale


@dataclasses.dataclass
class OutlierTune(CalibratedPass):
    """Fold per-channel scales and midpoints of norm-fed linear inputs (see module doc)."""

    bits: int = 8
    symmetrize: bool = True
    prescale: bool = True
    clip: float = 1.0
    name = "outliertune"

    def __post_init__(self):
        if not (self.symmetrize or self.prescale):
            raise ValueError("outliertune with neither symmetrize nor prescale does nothing")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        pairs = analyze(model).block_norm_readers()
        stats = self.statistics(model, [readers[0].input for _, readers in pairs])
        for norm, readers in pairs:
            observed = stats[readers[0].input.name]
            if self.symmetrize:
                midpoint = observed.midpoint
                half_range = (observed.maximum - observed.minimum) / 2
            else:
                midpoint, half_range = np.zeros(observed.channels), observed.absmax
            scale = self.clip * np.maximum(half_range, _MIN_HALF_RANGE) / qmax(self.bits)
            if not self.prescale:
                scale = np.ones_like(scale)
            norm.apply_affine(1.0 / scale, -midpoint / scale if self.symmetrize else None)
            for linear in readers:
                weight = linear.weight().astype(np.float64)
                bias = linear.bias()
                if self.symmetrize:
                    shifted = midpoint @ weight
                    linear.set_bias(shifted if bias is None else bias.astype(np.float64) + shifted)
                linear.set_weight(scale[:, None] * weight)
                if self.prescale:
                    qdq.mark_prescaled(linear.node)
        logger.info("OutlierTune folded scales into %d norms", len(pairs))
        return ir.passes.PassResult(model, modified=True)
