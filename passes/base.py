"""The common shape of an oqcompile pass: an in-place onnx_ir pass with recorded parameters."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import onnx_ir as ir

from oqcompile.calibrate import ActivationStats, CalibrationData, collect_statistics

__all__ = ["CalibratedPass", "TransformerPass"]


class TransformerPass(ir.passes.InPlacePass):
    """An in-place pass whose constructor arguments are its parameters.

    Subclasses are dataclasses; :meth:`params` returns their fields, which the recipe
    runner records in the model's ``metadata_props`` next to the pass name.
    """

    name: str = ""

    def params(self) -> dict:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    @property
    def needs_calibration(self) -> bool:
        return False


class CalibratedPass(TransformerPass):
    """A pass that reads activation statistics of the graph as it is when the pass runs.

    The recipe runner sets :attr:`calibration` (not a parameter: it is recorded as a hash
    in the model's metadata instead) before calling the pass.
    """

    calibration: CalibrationData | None = None
    progress: bool = False

    @property
    def needs_calibration(self) -> bool:
        return True

    def statistics(self, model: ir.Model, values: Sequence[ir.Value], gram: bool = False,
                   sample_tokens: int = 0) -> dict[str, ActivationStats]:
        if self.calibration is None:
            raise ir.passes.PreconditionError(f"{self.name} needs calibration data (calibration tokens)")
        return collect_statistics(model, values, self.calibration, gram=gram, sample_tokens=sample_tokens,
                                  progress=self.progress)
